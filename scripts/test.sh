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
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo test --workspace --locked "$@"
