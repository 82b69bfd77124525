#!/usr/bin/env bash
# Fetches the guest kernel for the Linux boot tests from the Debian package registry, into DIR:
#   DIR/bzImage  the newest linux-image-*-cloud-amd64 kernel (vmlinuz), as packaged
#   DIR/vmlinux  the ELF kernel inside it (the LZ4 payload of the bzImage; has a PVH note)
#   DIR/busybox  /bin/busybox from busybox-static, for a test initramfs
# Usage: scripts/linux-kernel.sh DIR   (the tests use <workspace>/target/linux-kernel)
# Idempotent: a file that exists is not fetched again. Never commit what this downloads.
set -euo pipefail

if (($# != 1)); then
    echo "usage: $0 DIR" >&2
    exit 64
fi
dir=$1

# Each tool with the Debian package that provides it.
need() {
    command -v "$1" >/dev/null || {
        echo "$0: '$1' is missing: install the Debian package '$2' (apt-get install $2)" >&2
        exit 1
    }
}
need apt-get apt
need apt-cache apt
need dpkg-deb dpkg
need lz4 lz4
need flock util-linux

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# Tests run in parallel: one fetch at a time, the others wait for it and find the files.
exec 9>"$dir/.lock"
flock 9

if [[ -s $dir/bzImage && -s $dir/vmlinux && -s $dir/busybox ]]; then
    exit 0
fi

work=$(mktemp -d "$dir/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The package linux-image-cloud-amd64 depends on the current versioned cloud kernel package.
newest_cloud_kernel() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[^ ]*-cloud-amd64\)$/\1/p' |
        sort -V | tail -n 1
}

# apt drops root to its sandbox user, which cannot write into our private work directory.
apt_options=()
if ((EUID == 0)); then
    apt_options=(-o APT::Sandbox::User=root)
fi

# Downloads package $1 into $work and unpacks it into $work/$2.
fetch_deb() {
    (cd "$work" && apt-get download -qq "${apt_options[@]}" "$1") || {
        echo "$0: 'apt-get download $1' failed" >&2
        exit 1
    }
    dpkg-deb -x "$work"/"$1"_*.deb "$work/$2"
}

fetch_kernel() {
    local package
    package=$(newest_cloud_kernel)
    if [[ -z $package ]]; then
        echo "$0: no cloud kernel in the package lists; running apt-get update" >&2
        apt-get update -qq
        package=$(newest_cloud_kernel)
    fi
    if [[ -z $package ]]; then
        echo "$0: apt-cache offers no linux-image-*-cloud-amd64 (through linux-image-cloud-amd64)" >&2
        exit 1
    fi
    echo "$0: fetching $package" >&2
    fetch_deb "$package" kernel
    local vmlinuz
    vmlinuz=$(find "$work/kernel/boot" -name 'vmlinuz-*' | head -n 1)
    [[ -n $vmlinuz ]] || {
        echo "$0: $package holds no boot/vmlinuz-*" >&2
        exit 1
    }
    extract_vmlinux "$vmlinuz" "$work/vmlinux"
    cp "$vmlinuz" "$work/bzImage"
    mv "$work/bzImage" "$dir/bzImage"
    mv "$work/vmlinux" "$dir/vmlinux"
}

# Decompresses the LZ4 (legacy format, magic 02 21 4c 18) payload of bzImage $1 into $2. The
# magic can also occur by chance earlier in the image, so every candidate is tried in order until
# one yields an ELF file. lz4 complains about the bytes after the stream (the size trailer of the
# payload), which is expected: the ELF check decides.
extract_vmlinux() {
    local offset
    for offset in $(LC_ALL=C grep -obUaP '\x02\x21\x4c\x18' "$1" | cut -d: -f1); do
        tail -c "+$((offset + 1))" "$1" | lz4 -dc >"$2" 2>/dev/null || true
        if [[ $(head -c 4 "$2" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]]; then
            return 0
        fi
    done
    echo "$0: no LZ4 stream holding an ELF kernel found in $1" >&2
    exit 1
}

fetch_busybox() {
    echo "$0: fetching busybox-static" >&2
    fetch_deb busybox-static busybox
    cp "$work/busybox/bin/busybox" "$work/busybox.bin"
    mv "$work/busybox.bin" "$dir/busybox"
}

if [[ ! -s $dir/bzImage || ! -s $dir/vmlinux ]]; then
    fetch_kernel
fi
if [[ ! -s $dir/busybox ]]; then
    fetch_busybox
fi
