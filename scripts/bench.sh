#!/usr/bin/env bash
# Side-by-side stream benchmark: Ferrite vs Debian's redis-server.
#
#   scripts/bench.sh full    (make bench)        ~25 min on 2 cores; writes docs/benchmarks.md
#   scripts/bench.sh quick   (make bench-quick)  < 2 min once built; writes bench-out/quick.md
#
# Both servers run on 127.0.0.1, each on a free port with its own fresh data
# directory, in three durability modes (none / everysec / always). Every load
# runs on both sides, several rounds, alternating which side goes first; the
# table shows medians and the Ferrite/Redis ratio. All load comes from
# target/release/ferrite-bench (crates/ferrite-bench): the same client code
# against both servers. Raw results and logs stay in bench-out/<run>/.
#
# Environment (all optional):
#   BENCH_FERRITE_IMPL=redis   run redis-server in the Ferrite slot too: a
#                              harness self-check until ferrite serves streams
#   BENCH_DOC=PATH             where to write the document
#   BENCH_MODES="none everysec always"   durability modes to run
#   BENCH_ROWS="xadd1_p1 ..."  rows to run (default: all; see row_spec)
#   BENCH_ROUNDS, BENCH_DURATION, BENCH_WARMUP   rounds and seconds per run
#   BENCH_MEM_N1, BENCH_MEM_N2 entries for the memory rows (N2 also restart)
#   BENCH_SKIP_MEM=1           skip memory/disk/restart rows
#   BENCH_SKIP_BUILD=1         use the binaries already in target/release
#   BENCH_KEEP_DATA=1          keep the servers' data directories
#
# The script never asserts a time: it measures and reports. It stops every
# server it started (trap), bounds every wait, and sends traffic only to
# 127.0.0.1.

set -uo pipefail

usage() { echo "usage: $0 full|quick" >&2; }
RUNMODE=${1:-}
case $RUNMODE in
full | quick) ;;
*)
    usage
    exit 2
    ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
IMPL=${BENCH_FERRITE_IMPL:-ferrite}
case $IMPL in ferrite | redis) ;; *)
    echo "bench: BENCH_FERRITE_IMPL must be 'ferrite' or 'redis'" >&2
    exit 2
    ;;
esac
B=$ROOT/target/release/ferrite-bench
FERRITE_BIN=$ROOT/target/release/ferrite
T_BEGIN=$(date +%s)

# ---------------------------------------------------------------- parameters
if [ "$RUNMODE" = full ]; then
    ROUNDS=${BENCH_ROUNDS:-3}
    DUR=${BENCH_DURATION:-5}
    WARMUP=${BENCH_WARMUP:-1}
    XR_N=1000000
    MEM_N1=${BENCH_MEM_N1:-1000000}
    MEM_N2=${BENCH_MEM_N2:-10000000}
    RESTARTS=3
    RB_ROWS=1
    DEFAULT_ROWS="xadd1_p1 xadd1_p16 xadd1000_p1 xadd1000_p16 xadd_paced xrange fanout wq_sat wq_paced"
    PACED_DUR=${BENCH_PACED_DURATION:-30}
else
    ROUNDS=${BENCH_ROUNDS:-1}
    DUR=${BENCH_DURATION:-1}
    WARMUP=${BENCH_WARMUP:-0.25}
    XR_N=100000
    MEM_N1=${BENCH_MEM_N1:-100000}
    MEM_N2=${BENCH_MEM_N2:-1000000}
    RESTARTS=1
    RB_ROWS=0
    DEFAULT_ROWS="xadd1_p1 xadd1_p16 xadd1000_p16 xadd_paced xrange fanout wq_sat wq_paced"
    PACED_DUR=${BENCH_PACED_DURATION:-$DUR}
fi
MODES=${BENCH_MODES:-none everysec always}
ROWS=${BENCH_ROWS:-$DEFAULT_ROWS}
CLIENTS=50
FAN_SUBS=50
FAN_RATE=1000
WQ_CONSUMERS=10
WQ_RATE=10000
PACED_RATE=50000
LOAD_TIMEOUT=$(awk -v d="$DUR" -v p="$PACED_DUR" -v w="$WARMUP" 'BEGIN { if (p > d) d = p; printf "%d", d + w + 60 }')
TIMING=(--duration "$DUR" --warmup "$WARMUP")

RUN=$ROOT/bench-out/$RUNMODE-$(date +%Y%m%d-%H%M%S)
mkdir -p "$RUN/logs" "$RUN/data" || exit 1
RESULTS=$RUN/results.tsv
META=$RUN/meta.tsv
CMDLOG=$RUN/commands.log   # every command, verbatim
CMDNORM=$RUN/commands.norm # the same with ports/paths as variables
: >"$RESULTS"
: >"$META"
: >"$CMDLOG"
: >"$CMDNORM"

if [ -n "${BENCH_DOC:-}" ]; then
    DOC=$BENCH_DOC
elif [ "$RUNMODE" = full ]; then
    DOC=$ROOT/docs/benchmarks.md
else
    DOC=$ROOT/bench-out/quick.md
fi

say() { printf '%s\n' "bench: $*" >&2; }
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }
human() { # 1000000 -> 1M
    awk -v n="$1" 'BEGIN { if (n % 1000000 == 0) printf "%dM", n / 1000000;
        else if (n % 1000 == 0) printf "%dk", n / 1000; else printf "%d", n }'
}

# ------------------------------------------------------------ servers (one place)
# Redis: Debian's redis-server with built-in defaults (no config file) except
# what is set here. Ferrite: the flags ferrite-server accepts; adjust here.
redis_cmd() { # port dir durability
    CMD=(redis-server --port "$1" --bind 127.0.0.1 --dir "$2" --daemonize no --save '')
    case $3 in
    none) CMD+=(--appendonly no) ;;
    everysec) CMD+=(--appendonly yes --appendfsync everysec) ;;
    always) CMD+=(--appendonly yes --appendfsync always) ;;
    esac
}
ferrite_cmd() { # port dir durability
    CMD=("$FERRITE_BIN" --port "$1" --bind 127.0.0.1 --dir "$2")
    case $3 in
    none) CMD+=(--appendonly no) ;;
    everysec | always) CMD+=(--appendfsync "$3") ;;
    esac
}
side_cmd() { # side port dir durability
    if [ "$1" = redis ] || [ "$IMPL" = redis ]; then
        redis_cmd "$2" "$3" "$4"
    else
        ferrite_cmd "$2" "$3" "$4"
    fi
}

declare -A PID=() PORT=()
ALL_PIDS=()

CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_ticks() { # pid -> utime + stime of all its threads, in clock ticks
    [ -r "/proc/$1/stat" ] && sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

cpu_kv() { # ticks-before ticks-after work -> " srv_cpu_s=.. srv_cpu_us=.." or nothing
    awk -v a="$1" -v b="$2" -v w="$3" -v hz="$CLK_TCK" 'BEGIN {
        if (a == "" || b == "" || w == "" || w == 0) exit
        printf " srv_cpu_s=%.2f srv_cpu_us=%.3f", (b - a) / hz, (b - a) / hz * 1e6 / w }'
}

# The whole machine's CPU ticks: "total steal idle" (from /proc/stat's
# first line; idle includes iowait). Steal is time the hypervisor ran
# something else on our virtual CPUs: a round with a large share of it
# measured the host, not the server.
machine_ticks() {
    awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $9, $5 + $6; exit }' /proc/stat 2>/dev/null
}

machine_kv() { # ticks-before ticks-after -> " steal_pct=.. idle_pct=.." or nothing
    awk -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        t = y[1] - x[1]
        if (t <= 0) exit
        printf " steal_pct=%.1f idle_pct=%.1f", (y[2] - x[2]) * 100 / t, (y[3] - x[3]) * 100 / t }'
}

alive() { # pid: running and not a zombie
    [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
server_alive() { alive "${PID[$1]:-}"; }

log_cmd() { # side cmd... : record verbatim and normalized
    local side=$1 line port
    shift
    line=$(printf '%q ' "$@")
    line=${line% }
    printf '%s\n' "$line" >>"$CMDLOG"
    port=${PORT[$side]:-}
    local var=\$RPORT
    [ "$side" = ferrite ] && var=\$FPORT
    line=${line//$RUN/\$RUN}
    line=${line//$ROOT\//}
    if [ -n "$port" ]; then
        line=${line//127.0.0.1:$port/127.0.0.1:$var}
        line=${line//--port $port/--port $var}
        line=${line//-p $port /-p $var }
    fi
    # shellcheck disable=SC2016 # the $ are literal: placeholders in the doc
    line=$(sed -E 's/--since-epoch-ns [0-9]+/--since-epoch-ns "$(date +%s%N)"/; s/ -n [0-9]+ / -n $N /; s/--pid [0-9]+/--pid $PID/' <<<"$line")
    printf '%s\n' "$line" >>"$CMDNORM"
}

start_server() { # side durability datadir -> PID[side], PORT[side], START_NS
    local side=$1 dur=$2 dir=$3
    mkdir -p "$dir"
    PORT[$side]=$("$B" free-port) || {
        say "no free port"
        return 1
    }
    side_cmd "$side" "${PORT[$side]}" "$dir" "$dur"
    log_cmd "$side" "${CMD[@]}"
    echo "=== $(date -u +%FT%TZ) ${CMD[*]}" >>"$RUN/logs/$side.log"
    START_NS=$(date +%s%N)
    "${CMD[@]}" >>"$RUN/logs/$side.log" 2>&1 &
    PID[$side]=$!
    ALL_PIDS+=("${PID[$side]}")
}

stop_server() { # side: SIGTERM, wait up to 120 s, then SIGKILL
    local side=$1 pid=${PID[$1]:-} i
    [ -n "$pid" ] || return 0
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < 1200; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            say "$side (pid $pid) ignored SIGTERM for 120 s; killing it"
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    wait "$pid" 2>/dev/null
    PID[$side]=""
}

cleanup() {
    local pid
    for pid in "${ALL_PIDS[@]}"; do
        if alive "$pid"; then
            kill -TERM "$pid" 2>/dev/null
        fi
    done
    for pid in "${ALL_PIDS[@]}"; do
        local i
        for ((i = 0; i < 300; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        alive "$pid" && kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ -z "${BENCH_KEEP_DATA:-}" ] && [ -d "$RUN/data" ]; then
        rm -rf "$RUN/data"
    fi
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

wait_ready() { # side timeout-secs [extra ready args]
    local side=$1 t=$2
    shift 2
    log_cmd "$side" "$B" ready --addr "127.0.0.1:${PORT[$side]}" --pid "${PID[$side]}" --timeout "$t" "$@"
    "$B" ready --addr "127.0.0.1:${PORT[$side]}" --pid "${PID[$side]}" --timeout "$t" "$@" 2>>"$RUN/logs/ready.err"
}

# ------------------------------------------------------------------ results
FAILURES=0
record() { # mode row label side round status kv...
    local mode=$1 row=$2 label=$3 side=$4 round=$5 status=$6
    shift 6
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$row" "$label" "$side" "$round" "$status" "$*" >>"$RESULTS"
    if [ "$status" = ok ]; then
        printf '  %-9s %-13s %-7s r%s  %s\n' "$mode" "$row" "$side" "$round" "$(cut -d' ' -f1-2 <<<"$*")" >&2
    else
        FAILURES=$((FAILURES + 1))
        printf '  %-9s %-13s %-7s r%s  FAILED %s\n' "$mode" "$row" "$side" "$round" "$*" >&2
    fi
}
errkv() { # message -> error=... (no spaces, tabs, '=')
    printf 'error=%s' "$(tr '\n\t =' '____' <<<"$1" | cut -c1-400)"
}

# run_load MODE ROW LABEL SIDE ROUND ferrite-bench-args...
run_load() {
    local mode=$1 row=$2 label=$3 side=$4 round=$5
    shift 5
    if ! server_alive "$side"; then
        record "$mode" "$row" "$label" "$side" "$round" failed "$(errkv "$side server is not running (see $RUN/logs/$side.log)")"
        return 1
    fi
    local addr=127.0.0.1:${PORT[$side]} out rc errf=$RUN/logs/load.err cpu0 cpu1 m0 m1
    log_cmd "$side" "$B" "$@" --addr "$addr"
    cpu0=$(cpu_ticks "${PID[$side]}")
    m0=$(machine_ticks)
    out=$(timeout -k 5 "$LOAD_TIMEOUT" "$B" "$@" --addr "$addr" 2>"$errf")
    rc=$?
    cpu1=$(cpu_ticks "${PID[$side]}")
    m1=$(machine_ticks)
    cat "$errf" >>"$RUN/logs/loads.err"
    local line
    line=$(grep '^RESULT ' <<<"$out" | tail -1)
    if [ $rc -eq 0 ] && [ -n "$line" ]; then
        # Server CPU (all threads) per unit of work, warm-up included.
        local work
        work=$(sed -nE 's/.* work=([0-9]+).*/\1/p' <<<"$line")
        record "$mode" "$row" "$label" "$side" "$round" ok "${line#RESULT }$(cpu_kv "$cpu0" "$cpu1" "$work")$(machine_kv "$m0" "$m1")"
        return 0
    fi
    local msg
    msg=$(tail -c 400 "$errf")
    [ $rc -eq 124 ] && msg="timed out after ${LOAD_TIMEOUT}s $msg"
    server_alive "$side" || msg="$msg (the $side server has exited)"
    record "$mode" "$row" "$label" "$side" "$round" failed "$(errkv "rc=$rc $msg")"
    return 1
}

del_keys() { # side del-args...
    local side=$1
    shift
    server_alive "$side" || return 0
    log_cmd "$side" "$B" del "$@" --addr "127.0.0.1:${PORT[$side]}"
    timeout -k 5 120 "$B" del "$@" --addr "127.0.0.1:${PORT[$side]}" >/dev/null 2>>"$RUN/logs/loads.err"
}

order() { # round -> "redis ferrite" or "ferrite redis"
    if (($1 % 2 == 1)); then echo "redis ferrite"; else echo "ferrite redis"; fi
}

# row_spec ROW -> LABEL, ARGS (ferrite-bench args), CLEAN (del args or empty)
row_spec() {
    CLEAN=()
    case $1 in
    xadd1_p1)
        LABEL="1. XADD, 1 stream, $CLIENTS clients, pipeline 1"
        ARGS=(xadd --clients "$CLIENTS" --pipeline 1 --key bench:x1 "${TIMING[@]}")
        CLEAN=(--key bench:x1)
        ;;
    xadd1_p16)
        LABEL="1. XADD, 1 stream, $CLIENTS clients, pipeline 16"
        ARGS=(xadd --clients "$CLIENTS" --pipeline 16 --key bench:x1 "${TIMING[@]}")
        CLEAN=(--key bench:x1)
        ;;
    xadd1000_p1)
        LABEL="2. XADD over 1,000 streams, $CLIENTS clients, pipeline 1"
        ARGS=(xadd --clients "$CLIENTS" --pipeline 1 --streams 1000 --key bench:x1000 "${TIMING[@]}")
        CLEAN=(--key bench:x1000 --numbered 1000)
        ;;
    xadd1000_p16)
        LABEL="2. XADD over 1,000 streams, $CLIENTS clients, pipeline 16"
        ARGS=(xadd --clients "$CLIENTS" --pipeline 16 --streams 1000 --key bench:x1000 "${TIMING[@]}")
        CLEAN=(--key bench:x1000 --numbered 1000)
        ;;
    xadd_paced)
        # Below both servers' saturation, so the tail is the servers' stalls,
        # not a queue; long enough in full runs for Ferrite's checkpoints
        # (64 MB of log, ~28 s at this rate) to fall inside it.
        LABEL="2b. XADD paced: $(human "$PACED_RATE")/s offered by $CLIENTS clients over 1,000 streams, timed from when due"
        ARGS=(xadd --clients "$CLIENTS" --rate "$PACED_RATE" --streams 1000 --key bench:xp --duration "$PACED_DUR" --warmup "$WARMUP")
        CLEAN=(--key bench:xp --numbered 1000)
        ;;
    xrange)
        LABEL="3. XRANGE COUNT 100 from a $(human "$XR_N")-entry stream, $CLIENTS clients"
        ARGS=(xrange --clients "$CLIENTS" --key bench:xr --entries "$XR_N" --count 100 "${TIMING[@]}")
        ;;
    fanout)
        LABEL="4. Fan-out: 1 producer at $FAN_RATE XADD/s, $FAN_SUBS subscribers in XREAD BLOCK"
        ARGS=(fanout --subscribers "$FAN_SUBS" --rate "$FAN_RATE" --key bench:fan "${TIMING[@]}")
        ;;
    wq_sat)
        LABEL="5. Work queue, saturated: 2 producers (pipeline 16, ≤10k unacked), $WQ_CONSUMERS consumers XREADGROUP COUNT 10 + XACK"
        ARGS=(workqueue --producers 2 --consumers "$WQ_CONSUMERS" --rate 0 --backlog 10000 --pipeline 16 --count 10 --key bench:wq "${TIMING[@]}")
        ;;
    wq_paced)
        LABEL="5. Work queue, paced: $WQ_RATE XADD/s offered by 2 producers, $WQ_CONSUMERS consumers"
        ARGS=(workqueue --producers 2 --consumers "$WQ_CONSUMERS" --rate "$WQ_RATE" --count 10 --key bench:wq "${TIMING[@]}")
        ;;
    *)
        say "unknown row '$1' (see row_spec in $0)"
        return 1
        ;;
    esac
}

# redis-benchmark cross-check of row 1 (same command, the reference client).
run_rb() { # mode row pipeline side round
    local mode=$1 row=$2 p=$3 side=$4 round=$5
    local label="1. XADD, 1 stream, $CLIENTS clients, pipeline $p — redis-benchmark (client cross-check)"
    if ! server_alive "$side"; then
        record "$mode" "$row" "$label" "$side" "$round" failed "$(errkv "$side server is not running")"
        return
    fi
    # Size -n to last about DUR seconds, from this side's last ferrite-bench run.
    local prev n
    prev=$(awk -F'\t' -v m="$mode" -v s="$side" -v r="xadd1_p$p" \
        '$1 == m && $2 == r && $4 == s && $6 == "ok" { for (i = 1; i <= split($7, kv, " "); i++) if (kv[i] ~ /^ops_s=/) { sub(/^ops_s=/, "", kv[i]); v = kv[i] } } END { print v + 0 }' "$RESULTS")
    n=$(awk -v v="$prev" -v d="$DUR" 'BEGIN { n = int(v * d); if (n < 20000) n = 20000; if (n > 10000000) n = 10000000; print n }')
    local cmd=(redis-benchmark -h 127.0.0.1 -p "${PORT[$side]}" -c "$CLIENTS" -n "$n" -P "$p" --csv
        XADD bench:rb '*' symbol BTC price 42000.5 volume 3)
    log_cmd "$side" "${cmd[@]}"
    local out rc cpu0 cpu1 m0 m1
    cpu0=$(cpu_ticks "${PID[$side]}")
    m0=$(machine_ticks)
    out=$(timeout -k 5 "$LOAD_TIMEOUT" "${cmd[@]}" 2>"$RUN/logs/rb.err")
    rc=$?
    cpu1=$(cpu_ticks "${PID[$side]}")
    m1=$(machine_ticks)
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    local kv
    kv=$(awk -F, 'NR == 2 { gsub(/"/, ""); printf "ops_s=%s p50_ms=%s p99_ms=%s max_ms=%s requests=%s", $2, $5, $7, $8, N }' N="$n" <<<"$out")
    if [ $rc -eq 0 ] && [ -n "$kv" ]; then
        record "$mode" "$row" "$label" "$side" "$round" ok "$kv$(cpu_kv "$cpu0" "$cpu1" "$n")$(machine_kv "$m0" "$m1")"
    else
        record "$mode" "$row" "$label" "$side" "$round" failed "$(errkv "rc=$rc $(tail -c 300 "$RUN/logs/rb.err")")"
    fi
    del_keys "$side" --key bench:rb
}

# ------------------------------------------------------------ per durability mode
run_mode() { # durability
    local mode=$1 side r row ok_sides=()
    say "durability '$mode': starting redis-server and $([ "$IMPL" = redis ] && echo "redis-server (Ferrite slot, self-check)" || echo ferrite)"
    for side in redis ferrite; do
        if start_server "$side" "$mode" "$RUN/data/$side-$mode" && wait_ready "$side" 30 >/dev/null; then
            ok_sides+=("$side")
        else
            say "$side did not become ready (log: $RUN/logs/$side.log; $(tail -n 2 "$RUN/logs/ready.err" | tr '\n' ' '))"
            if [ "$side" = ferrite ] && [ "$IMPL" = ferrite ]; then
                say "hint: until ferrite serves streams, 'BENCH_FERRITE_IMPL=redis make bench' runs the harness self-check"
            fi
            stop_server "$side"
        fi
    done
    # Row 3 needs a pre-filled stream with IDs 1-0 .. N-0.
    if [[ " $ROWS " == *" xrange "* ]]; then
        for side in "${ok_sides[@]}"; do
            log_cmd "$side" "$B" fill --key bench:xr --count "$XR_N" --explicit-ids --expect-len "$XR_N" --addr "127.0.0.1:${PORT[$side]}"
            timeout -k 5 900 "$B" fill --key bench:xr --count "$XR_N" --explicit-ids --expect-len "$XR_N" \
                --addr "127.0.0.1:${PORT[$side]}" >/dev/null 2>>"$RUN/logs/loads.err" ||
                say "$side: filling bench:xr failed (the xrange row will fail): $(tail -n 1 "$RUN/logs/loads.err")"
        done
    fi
    for row in $ROWS; do
        # The paced row is there for the tail with and without persistence.
        [ "$row" = xadd_paced ] && [ "$mode" = always ] && continue
        row_spec "$row" || continue
        for ((r = 1; r <= ROUNDS; r++)); do
            for side in $(order "$r"); do
                run_load "$mode" "$row" "$LABEL" "$side" "$r" "${ARGS[@]}"
                [ ${#CLEAN[@]} -gt 0 ] && del_keys "$side" "${CLEAN[@]}"
            done
        done
        if [ "$RB_ROWS" = 1 ] && [ "$mode" = none ] && { [ "$row" = xadd1_p1 ] || [ "$row" = xadd1_p16 ]; }; then
            local p=${row#xadd1_p}
            for ((r = 1; r <= ROUNDS; r++)); do
                for side in $(order "$r"); do
                    run_rb "$mode" "rb_$row" "$p" "$side" "$r"
                done
            done
        fi
    done
    stop_server redis
    stop_server ferrite
    [ -n "${BENCH_KEEP_DATA:-}" ] || rm -rf "$RUN/data/redis-$mode" "$RUN/data/ferrite-$mode"
}

# ------------------------------------------------------- memory, disk, restart
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
disk_bytes() { du -sb "$1" 2>/dev/null | cut -f1; }
settle() { # dir: wait (<= 120 s) until its size is unchanged for 2 s
    local dir=$1 last=-1 same=0 i now
    for ((i = 0; i < 240; i++)); do
        now=$(disk_bytes "$dir")
        if [ "$now" = "$last" ]; then
            same=$((same + 1))
            [ $same -ge 4 ] && return 0
        else
            same=0
        fi
        last=$now
        sleep 0.5
    done
    say "$dir still changing after 120 s; measuring anyway"
}

runs_redis() { [ "$1" = redis ] || [ "$IMPL" = redis ]; }

redis_rewrite_idle() { # port: wait (<= 300 s) until no AOF rewrite is running or scheduled
    local i info
    for ((i = 0; i < 600; i++)); do
        info=$(timeout 5 redis-cli -h 127.0.0.1 -p "$1" INFO persistence 2>/dev/null)
        if grep -q '^aof_rewrite_in_progress:0' <<<"$info" && grep -q '^aof_rewrite_scheduled:0' <<<"$info"; then
            return 0
        fi
        sleep 0.5
    done
    say "redis on port $1: AOF rewrite still running after 300 s; measuring anyway"
    return 1
}

# Redis's on-disk size (and restart time) depends on when its last automatic
# AOF rewrite happened. Measure it in its most compact state instead: finish
# any rewrite, then BGREWRITEAOF and wait. This is Redis's best case, i.e.
# conservative for Ferrite, which is measured as it is.
redis_compact() { # side
    local port=${PORT[$1]}
    redis_rewrite_idle "$port"
    log_cmd "$1" redis-cli -h 127.0.0.1 -p "$port" BGREWRITEAOF
    timeout 10 redis-cli -h 127.0.0.1 -p "$port" BGREWRITEAOF >>"$RUN/logs/$1.log" 2>&1
    sleep 0.5
    redis_rewrite_idle "$port"
}

mem_measure() { # side n label row fill_line rss0
    local side=$1 n=$2 label=$3 row=$4 fill=$5 rss0=$6 dir=$7
    local rss disk found fops
    settle "$dir"
    found=$(disk_bytes "$dir")
    if runs_redis "$side"; then
        redis_compact "$side"
        settle "$dir"
    fi
    rss=$(rss_kb "${PID[$side]}")
    disk=$(disk_bytes "$dir")
    fops=$(sed -nE 's/.* ops_s=([0-9.]+).*/\1/p' <<<"$fill")
    record everysec "$row" "$label" "$side" 1 ok "$(awk -v r="$rss" -v r0="$rss0" -v d="$disk" -v d0="$found" -v n="$n" -v f="$fops" 'BEGIN {
        printf "rss_mib=%.1f rss_b_entry=%.2f disk_found_b_entry=%.2f disk_mib=%.1f disk_b_entry=%.2f fill_ops_s=%s entries=%d",
            r / 1024, (r - r0) * 1024 / n, d0 / n, d / 1048576, d / n, f, n }')"
}

mem_phase() {
    local mode=everysec side dir rss0 out r
    local l1 l2 l3
    l1="6. Memory/disk: one stream, $(human "$MEM_N1") entries"
    l2="6. Memory/disk: one stream, $(human "$MEM_N2") entries"
    l3="7. Restart with $(human "$MEM_N2") entries on disk"
    say "memory/disk/restart rows ($mode): $(human "$MEM_N1") then $(human "$MEM_N2") entries per side"
    for side in redis ferrite; do
        dir=$RUN/data/$side-mem
        if ! { start_server "$side" "$mode" "$dir" && wait_ready "$side" 30 >/dev/null; }; then
            for r in mem_n1 mem_n2; do
                record "$mode" "$r" "$([ $r = mem_n1 ] && echo "$l1" || echo "$l2")" "$side" 1 failed "$(errkv "$side did not start")"
            done
            stop_server "$side"
            continue
        fi
        rss0=$(rss_kb "${PID[$side]}")
        local fill_timeout=1800
        log_cmd "$side" "$B" fill --key bench:mem --count "$MEM_N1" --expect-len "$MEM_N1" --addr "127.0.0.1:${PORT[$side]}"
        if out=$(timeout -k 5 $fill_timeout "$B" fill --key bench:mem --count "$MEM_N1" --expect-len "$MEM_N1" \
            --addr "127.0.0.1:${PORT[$side]}" 2>>"$RUN/logs/loads.err"); then
            mem_measure "$side" "$MEM_N1" "$l1" mem_n1 "$out" "$rss0" "$dir"
        else
            record "$mode" mem_n1 "$l1" "$side" 1 failed "$(errkv "fill: $(tail -c 300 "$RUN/logs/loads.err")")"
            stop_server "$side"
            continue
        fi
        local more=$((MEM_N2 - MEM_N1))
        log_cmd "$side" "$B" fill --key bench:mem --count "$more" --expect-len "$MEM_N2" --addr "127.0.0.1:${PORT[$side]}"
        if out=$(timeout -k 5 $fill_timeout "$B" fill --key bench:mem --count "$more" --expect-len "$MEM_N2" \
            --addr "127.0.0.1:${PORT[$side]}" 2>>"$RUN/logs/loads.err"); then
            mem_measure "$side" "$MEM_N2" "$l2" mem_n2 "$out" "$rss0" "$dir"
        else
            record "$mode" mem_n2 "$l2" "$side" 1 failed "$(errkv "fill: $(tail -c 300 "$RUN/logs/loads.err")")"
        fi
        stop_server "$side"
    done
    for ((r = 1; r <= RESTARTS; r++)); do
        for side in $(order "$r"); do
            dir=$RUN/data/$side-mem
            if [ ! -d "$dir" ] || ! awk -F'\t' -v s="$side" '$2 == "mem_n2" && $4 == s && $6 == "ok" { f = 1 } END { exit !f }' "$RESULTS"; then
                record "$mode" restart "$l3" "$side" "$r" failed "$(errkv "no filled data directory for $side")"
                continue
            fi
            start_server "$side" "$mode" "$dir" || continue
            local t0=$START_NS
            if out=$(wait_ready "$side" 1800 --key bench:mem --expect-len "$MEM_N2" --since-epoch-ns "$t0" --poll-ms 10); then
                record "$mode" restart "$l3" "$side" "$r" ok "$(sed -nE 's/.* ready_ms=([0-9.]+).*/ready_s=\1/p' <<<"$out" |
                    awk -F= '{ printf "ready_s=%.3f", $2 / 1000 }') $(sed -nE 's/.*(polls=[0-9]+).*/\1/p' <<<"$out")"
            else
                record "$mode" restart "$l3" "$side" "$r" failed "$(errkv "$(tail -n 1 "$RUN/logs/ready.err")")"
            fi
            stop_server "$side"
        done
    done
}

# ------------------------------------------------------------------- machine
# fsync latency of the disk the servers write to -> FSYNC_LINE. Probed at the
# start and before each durability mode: on a shared machine it can change by
# an order of magnitude during a run, and the everysec/always rows follow it.
fsync_probe() {
    local out
    log_cmd redis "$B" fsync-probe --dir "$RUN/data" --count 200 --size 4096
    out=$("$B" fsync-probe --dir "$RUN/data" --count 200 --size 4096 2>&1)
    FSYNC_LINE=$(sed -nE 's/.*p50_ms=([0-9.]+) p99_ms=([0-9.]+) p999_ms=[0-9.]+ max_ms=([0-9.]+).*/p50 \1 ms, p99 \2 ms, max \3 ms/p' <<<"$out")
    [ -n "$FSYNC_LINE" ] || FSYNC_LINE="probe failed: $out"
}

machine_info() {
    local cores model mem fs
    cores=$(nproc)
    model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    fs=$(df -PT "$RUN" | awk 'NR == 2 { print $2 " on " $1 }')
    fsync_probe
    meta machine "CPU: $cores cores ($model)"
    meta machine "Memory: $mem"
    meta machine "Disk (data directories): $fs; append 4 KiB + fdatasync, 200 times (\`ferrite-bench fsync-probe\`), at the start: $FSYNC_LINE"
    meta machine "Kernel: $(uname -sr); $(redis-server --version | cut -d' ' -f1-3); $(rustc --version 2>/dev/null || echo 'rustc ?')"
    meta machine "Load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (the machine may be shared; see the ratio noise in a self-check)"
    meta client "Client: \`ferrite-bench\`, one thread (tokio current-thread), no CPU pinning: it shares the $cores cores with the server under test, so client CPU is part of every number on both sides. Both servers of a mode run at once; the idle one uses almost no CPU."
}

# --------------------------------------------------------------------- main
say "mode $RUNMODE; run directory $RUN"
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    say "installing redis-server and redis-tools (Debian packages)"
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools; }; then
        say "could not install redis-server/redis-tools"
        exit 1
    fi
fi
if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
    say "building release binaries (cargo build --release -p ferrite -p ferrite-bench)"
    log_cmd redis cargo build --release -p ferrite -p ferrite-bench
    cargo build --release -p ferrite -p ferrite-bench || {
        say "build failed"
        exit 1
    }
fi
[ -x "$B" ] || {
    say "missing $B (build it, or unset BENCH_SKIP_BUILD)"
    exit 1
}
if [ "$IMPL" = ferrite ] && [ ! -x "$FERRITE_BIN" ]; then
    say "missing $FERRITE_BIN"
    exit 1
fi

T_MAIN=$(date +%s)
machine_info
FSYNC_SEEN=()
for mode in $MODES; do
    fsync_probe
    FSYNC_SEEN+=("before '$mode': $FSYNC_LINE")
    run_mode "$mode"
done
if [ -z "${BENCH_SKIP_MEM:-}" ]; then
    fsync_probe
    FSYNC_SEEN+=("before the memory/restart rows: $FSYNC_LINE")
    mem_phase
fi
fsync_probe
FSYNC_SEEN+=("at the end: $FSYNC_LINE")

# ------------------------------------------------------------------- report
T_END=$(date +%s)
GIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD -- . ':!docs/benchmarks.md' 2>/dev/null || GIT="$GIT (with uncommitted changes)"
if [ "$IMPL" = redis ]; then
    meta title "Ferrite vs Redis: stream benchmark — harness self-check (Redis vs Redis)"
    meta self_check 1
else
    meta title "Ferrite vs Redis: stream benchmark"
    meta self_check 0
fi
MAKE_TARGET=$([ "$RUNMODE" = full ] && echo "make bench" || echo "make bench-quick")
ENVS=$(env | grep -E '^BENCH_' | sort | tr '\n' ' ')
meta summary "Run: \`${ENVS}${MAKE_TARGET}\` (\`scripts/bench.sh $RUNMODE\`), $(date -u '+%Y-%m-%d %H:%M UTC'), commit $GIT."
meta summary "Each cell is the median of $ROUNDS round(s) ($DUR s measured after $WARMUP s warm-up per run; rows 6–7: one fill, $RESTARTS restart(s) per side); the loads took $(((T_END - T_MAIN) / 60)) min $(((T_END - T_MAIN) % 60)) s, $(((T_END - T_BEGIN) / 60)) min $(((T_END - T_BEGIN) % 60)) s with the build."
meta machine "Load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
for f in "${FSYNC_SEEN[@]}"; do meta machine "fsync latency $f"; done
if [ "$RUNMODE" = quick ]; then
    meta note "Quick mode (\`make bench-quick\`): a smoke run, not a measurement to quote: 1 round of ${DUR} s, XRANGE stream of $(human "$XR_N") entries, memory rows at $(human "$MEM_N1")/$(human "$MEM_N2") entries and restart with $(human "$MEM_N2"), no redis-benchmark rows."
fi
if [ "$MEM_N2" != 10000000 ] && [ -z "${BENCH_SKIP_MEM:-}" ]; then
    meta note "Rows 6–7 use $(human "$MEM_N2") entries, not 10M."
fi
meta note "Memory and restart rows run with everysec durability on a fresh server per side; rows 1–5 run in every durability mode listed."
meta note "Raw results: \`$(realpath --relative-to="$ROOT" "$RUN")/results.tsv\`, server logs and every command verbatim in \`$(realpath --relative-to="$ROOT" "$RUN")/\` (not committed)."
awk '!seen[$0]++' "$CMDNORM" | while IFS= read -r c; do meta cmd "$c"; done

ALL_FERRITE_FAILED=0
if ! awk -F'\t' '$4 == "ferrite" && $6 == "ok" { found = 1 } END { exit !found }' "$RESULTS"; then
    ALL_FERRITE_FAILED=1
fi
OUT=$DOC
if [ $ALL_FERRITE_FAILED = 1 ] && [ -z "${BENCH_DOC:-}" ]; then
    OUT=$RUN/benchmarks.md
    say "every Ferrite run failed: not touching $DOC; the report is in $OUT"
fi
echo
"$B" report --results "$RESULTS" --meta "$META" --out "$OUT" --table-only
cp "$OUT" "$RUN/benchmarks.md" 2>/dev/null
echo
grep '^machine' "$META" | cut -f2-
grep '^client' "$META" | cut -f2-
[ "$IMPL" = redis ] && say "SELF-CHECK: the Ferrite column is redis-server, not Ferrite."
say "wrote $OUT ($FAILURES failed runs); raw data in $RUN"
[ $FAILURES -eq 0 ]
