#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine with a Rust toolchain:
# installs redis-server and redis-tools (the differential tests and benchmarks
# run the real Redis beside Ferrite) and redis-py (tests/redis_py.rs). Safe
# to run again.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v redis-benchmark >/dev/null 2>&1 || need+=(redis-tools)

if ((${#need[@]})); then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
fi

# redis-py, for tests/redis_py.rs (a Python application's view).
if ! python3 -c 'import redis, sys; sys.exit(redis.__version__ != "5.2.1")' 2>/dev/null; then
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
        SUDO=""
        if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq python3 python3-pip >/dev/null
    fi
    python3 -m pip install --quiet --disable-pip-version-check 'redis==5.2.1' 2>/dev/null \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages 'redis==5.2.1'
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) and run this again" >&2
    exit 1
fi
echo "setup: $(redis-server --version | cut -d' ' -f1-3), $(cargo --version)"
