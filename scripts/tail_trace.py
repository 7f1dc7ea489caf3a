#!/usr/bin/env python3
"""Attribute the slowest XADDs of a paced run to what the server was doing.

Usage: tail_trace.py SLOW_LOG EVENTS SERVER_PID [BENCH_PID]

SLOW_LOG: `ferrite-bench xadd --rate R --slow-log F` (`<due> <latency>`
per line, nanoseconds, CLOCK_MONOTONIC). EVENTS: `perf script -F
comm,pid,tid,cpu,time,event,trace` of a `perf record -k mono -a` with
sched_switch, sched_wakeup, the syscall tracepoints listed in
scripts/trace-tail.sh and, where they could be set, the uprobes
probe_libc:malloc_trim(+__return) and probe_ferrite:snap (entry of
encode_snapshot). Written for docs/benchmarks.md ("Where the paced
`everysec` tail comes from"); a diagnostic, not a test.

Each slow XADD is given the first cause, in this order, that overlaps the
interval from when it was due to its reply:
  snapshot   a checkpoint's snapshot (encode_snapshot's entry to the
             checkpoint thread's first run) on a worker, store lock held;
  trim       malloc_trim running on a server thread;
  writeback  a kernel flusher (kworker) on a CPU for >= 1 ms of it;
  checkpoint the checkpoint thread on a CPU for >= 1 ms of it;
  log        the log's writer or fsync thread in a system call
             (fdatasync, sync_file_range, ftruncate, fallocate, madvise);
  other      none of these: the worker, the load generator and the rest
             of the machine sharing two cores.
"""
import collections
import re
import sys

# Thread-name prefixes (as perf truncates them) and their class.
SERVER_THREADS = [('ferrite-checkpo', 'checkpoint'), ('ferrite-log', 'log'),
                  ('tokio-rt-worker', 'worker')]
OTHER_THREADS = [('kworker', 'kworker'), ('ferrite-bench', 'bench'), ('swapper', 'idle')]


def main():
    slow_path, ev_path, server = sys.argv[1], sys.argv[2], sys.argv[3]
    slow = []
    for line in open(slow_path):
        a, b = line.split()
        slow.append((int(a) / 1e9, int(b) / 1e9))
    line_re = re.compile(r'\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)')
    sw_re = re.compile(r'prev_comm=(.*) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) ==> next_comm=(.*) next_pid=(\d+)')
    runs = []          # (start, end, class)
    last = {}          # cpu -> (start, class)
    comm_of = {}       # tid -> (comm, pid)
    sys_open = {}      # (tid, name) -> start
    sys_iv = []        # (start, end, name, comm)
    trim_open = {}
    trim_iv = []
    snap_at = []
    ckpt_first = []
    seen_ckpt = set()
    def klass(comm, tid):
        c, pid = comm_of.get(tid, (comm, None))
        names = SERVER_THREADS if pid == server else OTHER_THREADS
        for prefix, k in names:
            if (c if pid == server else comm).startswith(prefix):
                return k
        return 'server-other' if pid == server else 'other'
    for line in open(ev_path):
        m = line_re.match(line)
        if not m:
            continue
        comm, pid, tid, cpu, ts, ev, rest = m.groups()
        ts = float(ts)
        comm_of[tid] = (comm, pid)
        if ev == 'sched:sched_switch':
            mm = sw_re.match(rest)
            if not mm:
                continue
            nc, np = mm.group(4), mm.group(5)
            if cpu in last:
                s, k, _ = last[cpu]
                # The event is the previous task's: its pid is known here.
                if pid == server and comm.startswith('ferrite-checkpo'):
                    k = 'checkpoint'
                    if tid not in seen_ckpt:
                        seen_ckpt.add(tid)
                        ckpt_first.append((s, tid))
                runs.append((s, ts, k, tid if k == 'checkpoint' else None))
            last[cpu] = (ts, klass(nc, np), np)
        elif pid == server and ev.startswith('syscalls:sys_enter_'):
            sys_open[(tid, ev[19:])] = ts
        elif pid == server and ev.startswith('syscalls:sys_exit_'):
            s = sys_open.pop((tid, ev[18:]), None)
            if s is not None and comm.startswith('ferrite-log'):
                sys_iv.append((s, ts, ev[18:], comm))
        elif pid == server and ev == 'probe_libc:malloc_trim':
            trim_open[tid] = ts
        elif pid == server and ev == 'probe_libc:malloc_trim__return':
            s = trim_open.pop(tid, None)
            if s is not None:
                trim_iv.append((s, ts))
        elif pid == server and ev == 'probe_ferrite:snap':
            snap_at.append(ts)
    snaps = []
    for s in snap_at:
        after = [c for c, _ in ckpt_first if c >= s]
        snaps.append((s, after[0] if after else s + 0.002))
    runs.sort()
    starts = [r[0] for r in runs]
    import bisect
    def cpu_by_class(a, b):
        c = collections.Counter()
        i = bisect.bisect_left(starts, a - 0.5)
        while i < len(runs) and runs[i][0] < b:
            s, e, k, _ = runs[i]
            o = min(e, b) - max(s, a)
            if o > 0:
                c[k] += o
            i += 1
        return c
    def overlaps(ivs, a, b):
        return any(s < b and e > a for s, e in ivs)
    causes = collections.Counter()
    worst = collections.defaultdict(float)
    # Whether the checkpoint thread was alive (first run to last run).
    ck_spans = []
    for f, t in ckpt_first:
        ends = [e for s, e, k, tt in runs if tt == t]
        ck_spans.append((f, max(ends) if ends else f))
    in_ckpt = collections.Counter()
    for due, lat in slow:
        a, b = due, due + lat
        if overlaps(snaps, a, b):
            k = 'snapshot'
        elif overlaps(trim_iv, a, b):
            k = 'trim'
        else:
            c = cpu_by_class(a, b)
            if c['kworker'] >= 0.001:
                k = 'writeback'
            elif c['checkpoint'] >= 0.001:
                k = 'checkpoint'
            elif overlaps([(s, e) for s, e, _, _ in sys_iv], a, b):
                k = 'log'
            else:
                k = 'other'
        causes[k] += 1
        worst[k] = max(worst[k], lat)
        if overlaps(ck_spans, a - 0.005, b):
            in_ckpt[k] += 1
    n = len(slow)
    print(f"slow XADDs: {n}; snapshots {len(snaps)}, trims {len(trim_iv)}, "
          f"log syscalls {len(sys_iv)}")
    for k in ['snapshot', 'trim', 'writeback', 'checkpoint', 'log', 'other']:
        if n:
            print(f"  {k:10s} {causes[k]:7d} {100 * causes[k] / n:5.1f}%  worst {1000 * worst[k]:.2f} ms"
                  f"  ({in_ckpt[k]} while a checkpoint ran)")
    for s, e in ck_spans:
        print(f"  checkpoint thread {s:.4f} to {e:.4f}: {1000 * (e - s):.0f} ms")
    for s, e in snaps:
        print(f"  snapshot at {s:.4f}: {1000 * (e - s):.2f} ms to the checkpoint thread")
    for s, e in trim_iv:
        print(f"  malloc_trim at {s:.4f}: {1000 * (e - s):.2f} ms")

main()
