#!/usr/bin/env bash
# Trace where the slowest paced XADDs of Ferrite wait (docs/benchmarks.md,
# "Where the paced `everysec` tail comes from"). A diagnostic: needs root
# and perf (Debian's linux-perf), not part of `make bench` or the tests.
#
# usage: scripts/trace-tail.sh MODE [SECS] [RATE] [SLOW_MS]
#   MODE: none | everysec | always; env BIN (server), BENCH (load generator),
#   OUT (directory for slow.txt, events.txt; default ./bench-out/trace-MODE)
set -eu
MODE=$1; SECS=${2:-30}; RATE=${3:-50000}; SLOW=${4:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/ferrite}
BENCH=${BENCH:-$ROOT/target/release/ferrite-bench}
OUT=${OUT:-$ROOT/bench-out/trace-$MODE}
mkdir -p "$OUT"
read -r PORT < <("$BENCH" free-port --count 1)
DATA=$(mktemp -d)
case $MODE in none) ARGS=(--appendonly no) ;; *) ARGS=(--appendfsync "$MODE") ;; esac
"$BIN" --port "$PORT" --bind 127.0.0.1 --dir "$DATA" "${ARGS[@]}" >"$OUT/server.log" 2>&1 &
SERVER=$!
cleanup() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
"$BENCH" ready --addr "127.0.0.1:$PORT" --timeout 60 >/dev/null
# Uprobes, best effort: malloc_trim's entry and return, the snapshot's entry.
LIBC=$(ldd "$BIN" | awk '/libc.so/ {print $3}')
PROBES=()
perf probe -q -d 'probe_libc:*' 2>/dev/null || true
perf probe -q -d 'probe_ferrite*:*' 2>/dev/null || true
if perf probe -q -x "$LIBC" -a malloc_trim 2>/dev/null && perf probe -q -x "$LIBC" -a 'malloc_trim%return' 2>/dev/null; then
  PROBES+=(-e probe_libc:malloc_trim -e probe_libc:malloc_trim__return)
fi
SNAP=$(nm "$BIN" | grep -oE '_ZN10ferrite_db7persist8snapshot15encode_snapshot17h[0-9a-f]+E' | head -1 || true)
if [ -n "$SNAP" ] && perf probe -q -x "$BIN" -a "snap=$SNAP" 2>/dev/null; then
  PROBES+=(-e "$(perf probe -l 2>/dev/null | awk '/:snap / {print $1; exit}')")
fi
EV=()
for s in fdatasync fsync syncfs sync_file_range fallocate ftruncate madvise; do
  EV+=(-e "syscalls:sys_enter_$s" -e "syscalls:sys_exit_$s")
done
perf record -q -k mono -a -e sched:sched_switch -e sched:sched_wakeup "${EV[@]}" "${PROBES[@]}" \
  -o "$OUT/perf.data" 2>"$OUT/perf.log" &
PERF=$!
sleep 1 # perf attaches; not a synchronisation of the measurement
"$BENCH" xadd --addr "127.0.0.1:$PORT" --clients 50 --rate "$RATE" --streams 1000 --key bench:xp \
  --duration "$SECS" --warmup 1 --slow-log "$OUT/slow.txt" --slow-ms "$SLOW" | tee "$OUT/result.txt"
kill -INT "$PERF"; wait "$PERF" || true
redis-cli -p "$PORT" info persistence | tr -d '\r' | grep -E '^checkpoint' >"$OUT/info.txt" || true
redis-cli -p "$PORT" info memory | tr -d '\r' | grep -E '^mem_trim' >>"$OUT/info.txt" || true
perf script -i "$OUT/perf.data" -F comm,pid,tid,cpu,time,event,trace >"$OUT/events.txt" 2>/dev/null
python3 "$ROOT/scripts/tail_trace.py" "$OUT/slow.txt" "$OUT/events.txt" "$SERVER" | tee "$OUT/causes.txt"
