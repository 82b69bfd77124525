# Shared by the bench scripts (source it): the RUNS argument, the arguments after `--`, the
# /dev/kvm check and the release build.
#
# bench_setup DEFAULT_RUNS QUOTABLE_RUNS "$@" sets $runs, the array $extra and $release.

bench_setup() {
    local default=$1 quotable=$2
    shift 2
    runs=$default
    if (($# > 0)) && [[ $1 != -- ]]; then
        runs=$1
        shift
    fi
    if (($# > 0)) && [[ $1 == -- ]]; then
        shift
    fi
    extra=("$@")
    if ! [[ $runs =~ ^[0-9]+$ ]] || ((runs < 1)); then
        echo "usage: $0 [RUNS] [-- EXTRA_ARGS...]" >&2
        exit 64
    fi
    if ((runs < quotable)); then
        echo "$0: note: medians of fewer than $quotable runs are not worth quoting" >&2
    fi
    [[ -w /dev/kvm ]] || {
        echo "$0: needs read-write /dev/kvm" >&2
        exit 1
    }
    cargo build --release --quiet -p oxvmm -p kvm-floor
    release=${CARGO_TARGET_DIR:-target}/release
}
