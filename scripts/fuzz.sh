#!/usr/bin/env bash
# Run one cargo-fuzz target for a bounded time on the stable toolchain.
#
#   scripts/fuzz.sh TARGET [MINUTES] [-- extra libFuzzer flags]
#   scripts/fuzz.sh resp_parser 5
#   ASAN=1 scripts/fuzz.sh commands 2      # with AddressSanitizer (RUSTC_BOOTSTRAP=1)
#   scripts/fuzz.sh commands 5 -- -jobs=1 -max_len=512
#
# TARGET is resp_parser or commands (see docs/fuzzing.md). The corpus grows in
# fuzz/corpus/TARGET (git-ignored), seeded from fuzz/corpus-seed/TARGET; a
# crash is written to fuzz/artifacts/TARGET/ and this script exits non-zero.
# Installs cargo-fuzz from crates.io if it is missing.
set -euo pipefail

target=${1:?usage: scripts/fuzz.sh TARGET [MINUTES] [-- libFuzzer flags]}
minutes=${2:-5}
shift $(($# >= 2 ? 2 : 1))
[ "${1:-}" = "--" ] && shift

cd "$(dirname "$0")/../fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# -s none: coverage instrumentation only, all stable -C flags, so no nightly
# needed. ASan needs -Zsanitizer, which stable accepts only with
# RUSTC_BOOTSTRAP=1; it gets its own target dir so the two builds don't
# rebuild each other. Safe Rust rarely needs ASan; panics, hangs (-timeout)
# and memory blow-ups (-rss_limit_mb) are caught either way.
build=(-O -s none)
if [ "${ASAN:-0}" = 1 ]; then
    export RUSTC_BOOTSTRAP=1
    build=(-O -s address --target-dir target/asan)
fi
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}

flags=(-max_total_time=$((minutes * 60)) -timeout=10 -rss_limit_mb=4096 -print_final_stats=1)
[ -f "$target.dict" ] && flags+=(-dict="$target.dict")

mkdir -p "corpus/$target"
exec cargo fuzz run "${build[@]}" "$target" "corpus/$target" "corpus-seed/$target" -- "${flags[@]}" "$@"
