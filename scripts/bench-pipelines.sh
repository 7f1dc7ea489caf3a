#!/usr/bin/env bash
# Pipeline rows of the benchmark (docs/benchmarks.md, "Pipelines"):
#
#   scripts/bench-pipelines.sh full    (part of make bench)  10M entries
#   scripts/bench-pipelines.sh quick   (make bench-pipelines-quick) 1M entries
#
# Both servers on 127.0.0.1, free ports, fresh data directories, both with
# `appendfsync everysec` (the pipeline's guarantee needs a log; Redis gets
# its AOF). Rows:
#   1. backfill: PIPELINE.CREATE ... FROM 0 with the filter+projection over
#      N trades on Ferrite: events/s of wall time and per CPU-second of the
#      engine's thread;
#   2. the same job as a consumer program (XREADGROUP COUNT 1000, compute,
#      XADD pipelined, XACK), same client code, against Redis and Ferrite;
#   3. live: XADD throughput (50 clients, pipeline 1 and 16) into `trades`
#      with the pipeline attached, against without it;
#   4. XADD to result visible through a pipeline at 50k XADD/s, COMMIT_INTERVAL
#      1 and 10 (the default);
#   5. windows (issue "Pipeline engine II"): backfill of N ticks 1 ms apart
#      over 10,000 symbols through keyed TUMBLE 1 min VWAP, HOP 1 h by
#      1 min sum, SESSION 30 s; events per CPU-second of the engine thread
#      against Flink 2.3's figures for the same ticks on this machine; state
#      bytes per open key and window; window close to result visible.
# Raw RESULT lines and logs in bench-out/pipelines-<time>/; the table goes
# to stdout and bench-out/pipelines.md. It measures; it never asserts a time.
set -euo pipefail

MODE=${1:-quick}
case $MODE in
full) N=${BENCH_PIPE_N:-10000000}; DUR=${BENCH_DURATION:-10} ;;
quick) N=${BENCH_PIPE_N:-1000000}; DUR=${BENCH_DURATION:-3} ;;
*) echo "usage: $0 full|quick" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
    cargo build --release -q -p ferrite -p ferrite-bench
fi
BENCH=target/release/ferrite-bench
FERRITE=target/release/ferrite
RUN=bench-out/pipelines-$(date +%Y%m%d-%H%M%S)
mkdir -p "$RUN"
RAW=$RUN/results.txt
: >"$RAW"
say() { printf 'bench-pipelines: %s\n' "$*" >&2; }

read -r FP RP < <($BENCH free-port --count 2)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$p" 2>/dev/null || true
    done
    [ -n "${BENCH_KEEP_DATA:-}" ] || rm -rf "$RUN/data"
}
trap cleanup EXIT

start_both() {
    rm -rf "$RUN/data"
    mkdir -p "$RUN/data/f" "$RUN/data/r"
    "$FERRITE" --port "$FP" --bind 127.0.0.1 --dir "$RUN/data/f" --appendfsync everysec >"$RUN/ferrite.log" 2>&1 &
    PIDS+=($!)
    redis-server --port "$RP" --bind 127.0.0.1 --dir "$RUN/data/r" --daemonize no --save '' \
        --appendonly yes --appendfsync everysec >"$RUN/redis.log" 2>&1 &
    PIDS+=($!)
    $BENCH ready --addr "127.0.0.1:$FP" --timeout 60 >/dev/null
    $BENCH ready --addr "127.0.0.1:$RP" --timeout 60 >/dev/null
}

# row label side args... : runs one load, appends "label<TAB>side<TAB>RESULT..."
row() {
    local label=$1 side=$2
    shift 2
    local line
    line=$("$BENCH" "$@" | grep '^RESULT' || true)
    say "$label [$side]: ${line:-FAILED}"
    printf '%s\t%s\t%s\n' "$label" "$side" "${line:-RESULT error=failed}" >>"$RAW"
}

start_both
say "filling $N trades on both sides"
row fill ferrite trades-fill --addr "127.0.0.1:$FP" --count "$N"
row fill redis trades-fill --addr "127.0.0.1:$RP" --count "$N"
row backfill ferrite backfill --addr "127.0.0.1:$FP" --entries "$N"
row consumer redis consumer --addr "127.0.0.1:$RP" --entries "$N"
row consumer ferrite consumer --addr "127.0.0.1:$FP" --entries "$N"

# Windows: N ticks 1 ms apart, 10,000 symbols (Ferrite only). The trades
# go first: each row reads its own stream, as resident as the block cache
# allows (10M ticks are about 250 MB, within the default 256 MB).
redis-cli -p "$FP" DEL trades big_trades big_trades_c >/dev/null
row ticks ferrite ticks-fill --addr "127.0.0.1:$FP" --count "$N" --symbols 10000
row win_tumble ferrite backfill --addr "127.0.0.1:$FP" --entries "$N" --name w_tumble --sink w_vwap \
    --sql "INSERT INTO w_vwap SELECT symbol, window_start, vwap(price, volume) AS vwap, sum(volume) AS volume FROM ticks GROUP BY symbol, TUMBLE(_ms, INTERVAL '1' MINUTE)"
row win_hop ferrite backfill --addr "127.0.0.1:$FP" --entries "$N" --name w_hop --sink w_hop \
    --sql "INSERT INTO w_hop SELECT symbol, window_start, sum(volume) AS volume FROM ticks GROUP BY symbol, HOP(_ms, INTERVAL '1' MINUTE, INTERVAL '1' HOUR)"
row win_session ferrite backfill --addr "127.0.0.1:$FP" --entries "$N" --name w_session --sink w_session \
    --sql "INSERT INTO w_session SELECT symbol, window_start, window_end, count(*) AS n, sum(volume) AS volume FROM ticks GROUP BY symbol, SESSION(_ms, INTERVAL '30' SECOND)"
redis-cli -p "$FP" DEL ticks w_vwap w_hop w_session >/dev/null

# Live: XADD into the pipeline's source with and without it attached.
for p in 1 16; do
    row "xadd_p$p" ferrite xadd --addr "127.0.0.1:$FP" --clients 50 --pipeline "$p" --duration "$DUR" --key live
    redis-cli -p "$FP" PIPELINE.CREATE live_pipe AS \
        "INSERT INTO live_out SELECT symbol, price, volume, price * volume AS notional FROM live WHERE volume > 10" >/dev/null
    row "xadd_p${p}_with_pipeline" ferrite xadd --addr "127.0.0.1:$FP" --clients 50 --pipeline "$p" --duration "$DUR" --key live
    redis-cli -p "$FP" PIPELINE.INFO live_pipe | paste - - | grep -E "entries_in|lag_entries|ns_per_event" | tr '\n' ' ' >"$RUN/live_p$p.txt" || true
    redis-cli -p "$FP" PIPELINE.DROP live_pipe >/dev/null
    redis-cli -p "$FP" DEL live live_out >/dev/null
done
for ci in 1 10; do
    row "latency_ci$ci" ferrite pipe-latency --addr "127.0.0.1:$FP" --rate 50000 --duration "$DUR" --commit-interval "$ci"
done
row latency_window ferrite pipe-latency --addr "127.0.0.1:$FP" --rate 50000 --duration "$DUR" --commit-interval 1 --window-ms 100

# The table.
get() { # label side key
    awk -F'\t' -v l="$1" -v s="$2" -v k="$3" '$1==l && $2==s { n=split($3, a, " "); for (i=1;i<=n;i++) { split(a[i], kv, "="); if (kv[1]==k) print kv[2] } }' "$RAW" | head -1
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a+0 > 0 && b+0 > 0) printf "%.2fx", a/b; else print "n/a" }'; }
k() { awk -v a="$1" 'BEGIN { if (a+0 > 0) printf "%.0f", a; else print "n/a" }'; }
{
    echo "Pipelines, $N trades (\`scripts/bench-pipelines.sh $MODE\`, $(date -u +%Y-%m-%d), $(nproc) cores, both servers appendfsync everysec)"
    echo
    echo "| row | Ferrite | Redis | ratio |"
    echo "| --- | ---: | ---: | ---: |"
    bf=$(get backfill ferrite events_s)
    echo "| backfill through the filter+projection pipeline, events/s (wall) | $(k "$bf") | | |"
    echo "| the same, events per CPU-second of the engine thread | $(k "$(get backfill ferrite events_per_cpu_s)") | | |"
    cr=$(get consumer redis events_s)
    cf=$(get consumer ferrite events_s)
    echo "| consumer program (XREADGROUP COUNT 1000, compute, XADD, XACK), events/s | $(k "$cf") | $(k "$cr") | $(ratio "$cf" "$cr") |"
    echo "| Ferrite's pipeline against Redis + that consumer, events/s | $(k "$bf") | $(k "$cr") | $(ratio "$bf" "$cr") |"
    for p in 1 16; do
        a=$(get "xadd_p${p}_with_pipeline" ferrite ops_s)
        b=$(get "xadd_p$p" ferrite ops_s)
        echo "| XADD 50 clients pipeline $p with the pipeline attached / without, ops/s | $(k "$a") | $(k "$b") (without) | $(ratio "$a" "$b") |"
    done
    for ci in 1 10; do
        echo "| XADD to result visible at 50k/s, COMMIT_INTERVAL $ci: p50 / p99 / p99.9 ms | $(get "latency_ci$ci" ferrite p50_ms) / $(get "latency_ci$ci" ferrite p99_ms) / $(get "latency_ci$ci" ferrite p999_ms) | | |"
    done
    echo
    echo "Windows, $N ticks 1 ms apart over 10,000 symbols; the Flink column is Flink 2.3 SQL's events per CPU-second for the same ticks on this machine (generator to blackhole), the ratio is Ferrite's per CPU-second against it."
    echo
    echo "| window | events/s (wall) | events per CPU-second | Flink 2.3 per CPU-second | ratio | state bytes per open key and window |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for w in "win_tumble:keyed TUMBLE 1 min, VWAP + sum:180000" "win_hop:keyed HOP 1 h by 1 min, sum:60000" "win_session:keyed SESSION 30 s, count + sum:141000"; do
        IFS=: read -r label desc flink <<<"$w"
        cpu=$(get "$label" ferrite events_per_cpu_s)
        echo "| $desc | $(k "$(get "$label" ferrite events_s)") | $(k "$cpu") | $flink | $(ratio "$cpu" "$flink") | $(k "$(get "$label" ferrite bytes_per_window)") |"
    done
    echo "| window close (TUMBLE 100 ms at 50k/s) to result visible: p50 / p99 / p99.9 ms | $(get latency_window ferrite p50_ms) / $(get latency_window ferrite p99_ms) / $(get latency_window ferrite p999_ms) | | | | |"
} | tee bench-out/pipelines.md
say "raw results in $RAW"
