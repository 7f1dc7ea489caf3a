#!/usr/bin/env bash
# Memory per element of hashes, sets, sorted sets and lists: Ferrite against
# Debian's redis-server, side by side (docs/benchmarks.md, "Memory per
# element of the data types").
#
#   scripts/bench-memory-types.sh            # writes bench-out/memory-types.md
#
# For each type and shape (many small keys in the compact encoding; a few
# big keys in the table encoding), a fresh server of each kind (no
# persistence), loaded through `redis-cli --pipe`; the figure is the growth
# of the process's resident set (VmRSS) divided by the number of elements,
# so both sides are measured the same way, allocator included. It measures;
# it never asserts.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${BENCH_SKIP_BUILD:-}" ] || cargo build --release -q -p ferrite -p ferrite-bench
BENCH=target/release/ferrite-bench
FERRITE=target/release/ferrite
OUT=bench-out/memory-types.md
RUN=$(mktemp -d)
mkdir -p bench-out
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$RUN"' EXIT

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# gen TYPE KEYS PER -> RESP commands on stdout
gen() {
    python3 - "$1" "$2" "$3" <<'PY'
import sys
t, keys, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
w = sys.stdout.write
def cmd(*a):
    w("*%d\r\n" % len(a))
    for x in a:
        x = str(x)
        w("$%d\r\n%s\r\n" % (len(x), x))
for k in range(keys):
    key = "%s:%d" % (t, k)
    for base in range(0, per, 100):
        n = range(base, min(per, base + 100))
        if t == "hash":
            args = []
            for i in n: args += ["field:%d" % i, "value:%d" % i]
            cmd("HSET", key, *args)
        elif t == "set":
            cmd("SADD", key, *["member:%d" % i for i in n])
        elif t == "intset":
            cmd("SADD", key, *[str(1000000 + i) for i in n])
        elif t == "zset":
            args = []
            for i in n: args += [str(i), "member:%d" % i]
            cmd("ZADD", key, *args)
        elif t == "list":
            cmd("RPUSH", key, *["item:%d" % i for i in n])
PY
}

measure() { # side type keys per -> bytes per element
    local side=$1 t=$2 keys=$3 per=$4 port pid
    port=$($BENCH free-port)
    if [ "$side" = redis ]; then
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >/dev/null 2>&1 &
    else
        "$FERRITE" --port "$port" --bind 127.0.0.1 --appendonly no --dir "$RUN/f-$t" >/dev/null 2>&1 &
    fi
    pid=$!
    $BENCH ready --addr "127.0.0.1:$port" --timeout 30 >/dev/null
    local before after
    before=$(rss_kb "$pid")
    gen "$t" "$keys" "$per" | redis-cli -p "$port" --pipe >/dev/null
    after=$(rss_kb "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    awk -v a="$after" -v b="$before" -v n="$((keys * per))" 'BEGIN { printf "%.1f", (a - b) * 1024 / n }'
}

{
    echo "Memory per element (VmRSS growth / elements; \`scripts/bench-memory-types.sh\`, $(date -u +%Y-%m-%d), no persistence on either side)"
    echo
    echo "| type, shape | elements | Ferrite B/elem | Redis B/elem | ratio |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    for spec in "hash 20000 20 small hashes (listpack)" "hash 4 50000 big hashes (hashtable)" \
        "intset 20000 20 small integer sets (intset)" "set 20000 20 small sets (hashtable)" "set 4 50000 big sets (hashtable)" \
        "zset 20000 20 small sorted sets (listpack)" "zset 4 50000 big sorted sets (skiplist)" \
        "list 20000 20 small lists (quicklist)" "list 4 50000 big lists (quicklist)"; do
        read -r t keys per label <<<"$spec"
        f=$(measure ferrite "$t" "$keys" "$per")
        r=$(measure redis "$t" "$keys" "$per")
        ratio=$(awk -v f="$f" -v r="$r" 'BEGIN { if (r > 0) printf "%.2fx", f / r; else print "n/a" }')
        echo "| $label | $((keys * per)) | $f | $r | $ratio |"
    done
} | tee "$OUT"
