//! Renders the benchmark table (markdown) from the files `scripts/bench.sh`
//! writes: medians over rounds per metric, and the Ferrite/Redis ratio.
//!
//! `results.tsv`, one line per run:
//! `mode<TAB>row<TAB>label<TAB>side<TAB>round<TAB>ok|failed<TAB>k=v k=v ...`
//! with side `redis` or `ferrite`. `meta.tsv`: `key<TAB>value` lines; keys
//! `title`, `self_check`, `date`, `summary`, `machine`, `client`, `note` and
//! `cmd` (the last five may repeat and keep their order).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[arg(long)]
    pub results: PathBuf,
    #[arg(long)]
    pub meta: PathBuf,
    /// Also write the document here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print only the table (not the whole document) on stdout.
    #[arg(long)]
    pub table_only: bool,
}

struct Run {
    mode: String,
    row: String,
    label: String,
    side: String,
    ok: bool,
    kv: BTreeMap<String, String>,
    round: String,
}

enum Fmt {
    Count,
    Ms,
    Fixed1,
    Fixed2,
    Secs,
}

struct Metric {
    keys: &'static [&'static str],
    name: &'static str,
    fmt: Fmt,
}

const METRICS: &[Metric] = &[
    Metric {
        keys: &["ops_s"],
        name: "ops/s ↑",
        fmt: Fmt::Count,
    },
    Metric {
        keys: &["entries_s"],
        name: "entries read/s ↑",
        fmt: Fmt::Count,
    },
    Metric {
        keys: &["deliveries_s"],
        name: "deliveries/s ↑",
        fmt: Fmt::Count,
    },
    Metric {
        keys: &["consumed_s"],
        name: "consumed entries/s ↑",
        fmt: Fmt::Count,
    },
    Metric {
        keys: &["p50_ms", "p99_ms", "p999_ms"],
        name: "latency p50 / p99 / p99.9, ms ↓",
        fmt: Fmt::Ms,
    },
    Metric {
        keys: &["srv_cpu_us"],
        name: "server CPU µs per op ↓",
        fmt: Fmt::Fixed2,
    },
    Metric {
        keys: &["lost"],
        name: "lost deliveries ↓",
        fmt: Fmt::Count,
    },
    Metric {
        keys: &["fill_ops_s"],
        name: "fill XADD/s (1 conn, pipeline 1000) ↑",
        fmt: Fmt::Count,
    },
    Metric {
        keys: &["rss_mib"],
        name: "RSS, MiB ↓",
        fmt: Fmt::Fixed1,
    },
    Metric {
        keys: &["rss_b_entry"],
        name: "RSS above empty server, bytes/entry ↓",
        fmt: Fmt::Fixed1,
    },
    Metric {
        keys: &["disk_found_b_entry"],
        name: "disk bytes/entry, as found after the fill ↓",
        fmt: Fmt::Fixed1,
    },
    Metric {
        keys: &["disk_mib"],
        name: "disk, MiB (Redis after BGREWRITEAOF) ↓",
        fmt: Fmt::Fixed1,
    },
    Metric {
        keys: &["disk_b_entry"],
        name: "disk bytes/entry (Redis after BGREWRITEAOF) ↓",
        fmt: Fmt::Fixed1,
    },
    Metric {
        keys: &["ready_s"],
        name: "start → first reply with all data, s ↓",
        fmt: Fmt::Secs,
    },
];

fn read_runs(text: &str) -> Result<Vec<Run>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.splitn(7, '\t').collect();
        if cols.len() < 6 {
            return Err(Error::msg(format!(
                "results line {}: expected 7 tab-separated columns: {line:?}",
                n + 1
            )));
        }
        let kv = cols
            .get(6)
            .unwrap_or(&"")
            .split_whitespace()
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.push(Run {
            mode: cols[0].to_string(),
            row: cols[1].to_string(),
            label: cols[2].to_string(),
            side: cols[3].to_string(),
            round: cols[4].to_string(),
            ok: cols[5] == "ok",
            kv,
        });
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    let mut left = s.len();
    for c in s.chars() {
        out.push(c);
        left -= 1;
        if left > 0 && left % 3 == 0 {
            out.push(',');
        }
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn fmt_val(f: &Fmt, v: f64) -> String {
    match f {
        Fmt::Count => thousands(v),
        Fmt::Fixed1 => format!("{v:.1}"),
        Fmt::Fixed2 => format!("{v:.2}"),
        Fmt::Secs => format!("{v:.2}"),
        Fmt::Ms => {
            if v >= 100.0 {
                format!("{v:.0}")
            } else if v >= 10.0 {
                format!("{v:.1}")
            } else if v >= 1.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.3}")
            }
        }
    }
}

/// Medians of `key` per side over the ok runs.
fn side_median(runs: &[&Run], side: &str, key: &str) -> Option<f64> {
    median(
        runs.iter()
            .filter(|r| r.ok && r.side == side)
            .filter_map(|r| r.kv.get(key)?.parse::<f64>().ok())
            .collect(),
    )
}

fn cell(runs: &[&Run], side: &str, m: &Metric) -> (String, Vec<Option<f64>>) {
    let total = runs.iter().filter(|r| r.side == side).count();
    let ok = runs.iter().filter(|r| r.side == side && r.ok).count();
    let vals: Vec<Option<f64>> = m.keys.iter().map(|k| side_median(runs, side, k)).collect();
    let text = if total == 0 {
        "not run".to_string()
    } else if ok == 0 {
        "**failed**".to_string()
    } else {
        let parts: Vec<String> = vals
            .iter()
            .map(|v| v.map_or("–".to_string(), |v| fmt_val(&m.fmt, v)))
            .collect();
        let mut s = parts.join(" / ");
        if ok < total {
            let _ = write!(s, " ({} of {total} runs failed)", total - ok);
        }
        s
    };
    (text, vals)
}

fn ratio_cell(r: &[Option<f64>], f: &[Option<f64>]) -> String {
    let parts: Vec<String> = r
        .iter()
        .zip(f)
        .map(|(r, f)| match (r, f) {
            (Some(r), Some(f)) if *r > 0.0 => format!("{:.2}", f / r),
            (Some(r), Some(f)) if *r == 0.0 && *f == 0.0 => "=".to_string(),
            _ => "–".to_string(),
        })
        .collect();
    parts.join(" / ")
}

/// The results table (markdown).
fn table(runs: &[Run], self_check: bool) -> String {
    let mut rows: Vec<&str> = Vec::new();
    let mut modes: Vec<&str> = Vec::new();
    for r in runs {
        if !rows.contains(&r.row.as_str()) {
            rows.push(&r.row);
        }
        if !modes.contains(&r.mode.as_str()) {
            modes.push(&r.mode);
        }
    }
    let fer = if self_check {
        "\"Ferrite\" (= 2nd redis-server, self-check)"
    } else {
        "Ferrite"
    };
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| load | durability | metric | Redis | {fer} | Ferrite/Redis |"
    );
    t.push_str("|---|---|---|---:|---:|---:|\n");
    for row in &rows {
        for mode in &modes {
            let group: Vec<&Run> = runs
                .iter()
                .filter(|r| r.row == *row && r.mode == *mode)
                .collect();
            let Some(first) = group.first() else { continue };
            let mut first_line = true;
            for m in METRICS {
                if !group
                    .iter()
                    .any(|r| m.keys.iter().any(|k| r.kv.contains_key(*k)))
                {
                    continue;
                }
                let (rc, rv) = cell(&group, "redis", m);
                let (fc, fv) = cell(&group, "ferrite", m);
                let (label, dur) = if first_line {
                    (first.label.as_str(), mode.to_string())
                } else {
                    ("", String::new())
                };
                first_line = false;
                let _ = writeln!(
                    t,
                    "| {label} | {dur} | {} | {rc} | {fc} | {} |",
                    m.name,
                    ratio_cell(&rv, &fv)
                );
            }
            if first_line {
                // Every run failed before reporting a metric.
                let (rc, _) = cell(&group, "redis", &METRICS[0]);
                let (fc, _) = cell(&group, "ferrite", &METRICS[0]);
                let _ = writeln!(t, "| {} | {mode} | – | {rc} | {fc} | – |", first.label);
            }
        }
    }
    t
}

/// For a self-check (both sides are the same server): how far the
/// Ferrite/Redis ratios stray from 1.00, per kind of metric.
fn noise_summary(runs: &[Run]) -> String {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for r in runs {
        if !groups.contains(&(r.row.as_str(), r.mode.as_str())) {
            groups.push((&r.row, &r.mode));
        }
    }
    // (what, keys, skip paced rows whose throughput is set by the offered rate)
    let kinds: [(&str, &[&str], bool); 5] = [
        (
            "throughput (rows 1–3, saturated work queue)",
            &["ops_s", "consumed_s"],
            true,
        ),
        ("p50 latency", &["p50_ms"], false),
        ("p99 latency", &["p99_ms"], false),
        ("server CPU per op", &["srv_cpu_us"], false),
        (
            "memory and disk per entry",
            &["rss_b_entry", "disk_b_entry"],
            false,
        ),
    ];
    let mut out = String::new();
    for (what, keys, skip_paced) in kinds {
        let mut ratios = Vec::new();
        for (row, mode) in &groups {
            let g: Vec<&Run> = runs
                .iter()
                .filter(|r| r.row == *row && r.mode == *mode)
                .collect();
            let paced = g.iter().any(|r| {
                r.kv.contains_key("sent")
                    || r.kv
                        .get("offered_rate")
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v > 0.0)
            });
            if skip_paced && paced {
                continue;
            }
            for k in keys {
                if let (Some(r), Some(f)) =
                    (side_median(&g, "redis", k), side_median(&g, "ferrite", k))
                {
                    if r > 0.0 {
                        ratios.push(f / r);
                    }
                }
            }
        }
        let n = ratios.len();
        if let (Some(lo), Some(hi), Some(mid)) = (
            ratios.iter().copied().reduce(f64::min),
            ratios.iter().copied().reduce(f64::max),
            median(ratios),
        ) {
            let _ = writeln!(
                out,
                "- {what}: ratios {lo:.2}–{hi:.2}, median {mid:.2} (over {n} rows)"
            );
        }
    }
    out
}

fn failures(runs: &[Run]) -> String {
    let mut s = String::new();
    for r in runs.iter().filter(|r| !r.ok) {
        let err =
            r.kv.get("error")
                .map(String::as_str)
                .unwrap_or("(no message)");
        let _ = writeln!(
            s,
            "- {} / {} / {} / round {}: {}",
            r.row,
            r.mode,
            r.side,
            r.round,
            err.replace('_', " ")
        );
    }
    s
}

/// Rounds during which the hypervisor took a visible share of the
/// machine's CPU (`steal_pct` from /proc/stat, recorded by bench.sh): their
/// figures measured the host as much as the server.
fn steal_notes(runs: &[Run]) -> String {
    let mut s = String::new();
    for r in runs.iter().filter(|r| r.ok) {
        let steal = r.kv.get("steal_pct").and_then(|v| v.parse::<f64>().ok());
        if let Some(steal) = steal.filter(|&v| v >= STEAL_NOTE_PCT) {
            let idle = r.kv.get("idle_pct").map(String::as_str).unwrap_or("?");
            let _ = writeln!(
                s,
                "- {} / {} / {} / round {}: steal {steal:.1}% of the machine's CPU time, idle {idle}%",
                r.row, r.mode, r.side, r.round
            );
        }
    }
    s
}

/// A round with at least this much steal is listed under the results.
const STEAL_NOTE_PCT: f64 = 3.0;

const METHOD: &str = "\
- **Sides.** Each durability mode starts one `redis-server` and one `ferrite` \
on 127.0.0.1, each on its own free port and its own fresh data directory. \
Durability: *none* = Redis `appendonly no`, `save \"\"` vs Ferrite \
`--appendonly no`; *everysec* = Redis `appendonly yes`, `appendfsync everysec` \
vs Ferrite `--appendfsync everysec`; *always* = both `always`.
- **Rounds.** Every row runs on both sides in each round, alternating which \
side goes first (R F, F R, ...). Each cell is the median over rounds of that \
metric; the ratio is Ferrite's median over Redis's (↑ higher is better, \
↓ lower is better). Keys are deleted after each run. Each run also records \
the whole machine's stolen (hypervisor) and idle CPU time from /proc/stat; \
rounds with 3% or more stolen are listed under the results.
- **Client.** All rows except `redis-benchmark` ones use `ferrite-bench` \
(crates/ferrite-bench): the same Rust RESP2 client against both servers, one \
thread, connections opened before the clock starts, a warm-up before the \
measured window. It runs on the same cores as the server under test (no \
pinning), so client CPU is part of every number.
- **Rows 1–3 (closed loop).** N connections each send P commands, wait for \
the P replies, repeat. ops/s = commands completed in the window / window. \
Latency is per command (P = 1) or per batch of P (P > 1), send to last reply. \
XADD payload `symbol BTC price 42000.5 volume 3`, ID `*`; with 1,000 streams \
each XADD picks one at random. XRANGE reads `COUNT 100` from a random start \
ID in a stream pre-filled with IDs `1-0 .. N-0` and checks it got 100 entries.
- **Row 2b (paced XADD).** The load of row 2 offered at a fixed rate below \
both servers' saturation (none and everysec only): each connection sends, on \
its own 1 ms tick (the connections' ticks staggered over the millisecond), \
the XADDs due by then, and each XADD is timed from when it was due (its \
tick, or the client's late wake from sleep if later) to its reply, so a \
stall counts once for every command it held back. This is the tail a user \
sees under a steady load; rows 1–2 at saturation also measure queueing.
- **Row 4 (fan-out).** One producer XADDs at a fixed rate (1 ms ticks), each \
entry carrying `ts` = the producer's clock when written; 50 subscribers loop \
on `XREAD COUNT 1000 BLOCK 500 STREAMS k <last-id>`. Latency = subscriber \
clock at reply − ts, per delivery (same process, same monotonic clock). \
Lost = expected deliveries not received within 10 s after the window.
- **Row 5 (work queue).** Producers XADD (with `ts`); 10 consumers in one \
group loop on `XREADGROUP GROUP g c<i> COUNT 10 BLOCK 200 STREAMS k >` then \
`XACK` the IDs. consumed/s = entries acknowledged in the window / window; \
latency = consumer clock at XREADGROUP reply − ts. *Saturated*: 2 producers \
pipelining 16 as fast as they can, pausing while 10,000 entries are \
unacknowledged (so backlog and latency stay bounded if consumers fall \
behind). *Paced*: a fixed offered rate; consumed/s below it means the \
server could not keep up.
- **Row 6 (memory/disk).** A fresh server per side (everysec), one stream \
filled with `XADD k * symbol BTC price 42000.5 volume 3` over one connection \
pipelining 1000. RSS is `VmRSS` from `/proc/<pid>/status`; bytes/entry is \
(RSS − RSS of the empty server) / entries. Disk is the sum of file sizes (`du -sb`) in \
the data directory once it stops changing, twice: *as found* right after the \
fill (for Redis this depends on when its last automatic AOF rewrite ran), and \
after Redis has finished any rewrite and run `BGREWRITEAOF` (its most compact \
state, and the state the restart row starts from). Ferrite is measured as it \
is both times, so the second figure is Redis's best case: conservative for \
Ferrite.
- **Row 7 (restart).** The filled server (Redis compacted, as above) is \
stopped with SIGTERM and started again on the same data directory; the time runs from just before exec to the \
first `XLEN` that returns the full count (polled every 10 ms; Redis answers \
`-LOADING` meanwhile).
- **Redis configuration.** Debian's `redis-server`, no config file: built-in \
defaults plus the flags in the commands below (so `auto-aof-rewrite-percentage \
100`, `auto-aof-rewrite-min-size 64mb`: with AOF on, Redis's own rewrites can \
fall inside a run, as they would in production).
- **Server CPU per op.** User + system CPU time of the server process (all \
threads; from `/proc/<pid>/stat`, 10 ms ticks) over the whole run, warm-up \
included, divided by all operations of the run (rows 1–3: commands; row 4: \
deliveries; row 5: acknowledged entries). It is less sensitive than ops/s to \
other load on the machine. A forked child (Redis's AOF rewrite) is not counted.
- Percentiles are nearest-rank over all samples of a run. Nothing here \
asserts a time: a failed run is reported as failed.
";

pub fn run(a: ReportArgs) -> Result<()> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|e| Error::msg(format!("read {}: {e}", p.display())))
    };
    let runs = read_runs(&read(&a.results)?)?;
    let meta_text = read(&a.meta)?;
    let meta: Vec<(&str, &str)> = meta_text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .collect();
    let get = |k: &str| meta.iter().find(|(mk, _)| *mk == k).map(|(_, v)| *v);
    let all = |k: &str| -> Vec<&str> {
        meta.iter()
            .filter(|(mk, _)| *mk == k)
            .map(|(_, v)| *v)
            .collect()
    };
    let self_check = get("self_check") == Some("1");
    let tbl = table(&runs, self_check);

    let mut doc = String::new();
    let _ = writeln!(
        doc,
        "# {}\n",
        get("title").unwrap_or("Ferrite vs Redis: stream benchmark")
    );
    if self_check {
        doc.push_str(
            "> **Harness self-check — these are NOT Ferrite numbers.** Both columns are \
             `redis-server`: the \"Ferrite\" column is a second redis-server with the same \
             configuration, substituted with `BENCH_FERRITE_IMPL=redis` because the ferrite \
             server is not usable yet. Ratios should be close to 1.00; how far they stray \
             shows the run-to-run noise of this harness on this machine. Re-run `make bench` \
             once `ferrite` serves streams to get the real comparison.\n\n",
        );
    }
    for s in all("summary") {
        let _ = writeln!(doc, "{s}  ");
    }
    if self_check {
        let n = noise_summary(&runs);
        if !n.is_empty() {
            doc.push_str(
                "\n**Harness noise measured by this self-check** (same server on both sides, so \
                 every ratio should be 1.00; a real Ferrite/Redis difference smaller than this \
                 spread is not shown by this machine):\n\n",
            );
            doc.push_str(&n);
        }
    }
    doc.push_str("\n## Results\n\n");
    doc.push_str(&tbl);
    let f = failures(&runs);
    if !f.is_empty() {
        doc.push_str("\n**Failed runs:**\n\n");
        doc.push_str(&f);
    }
    let st = steal_notes(&runs);
    if !st.is_empty() {
        doc.push_str(
            "\n**Rounds with CPU stolen by the hypervisor** (at least 3% of the machine's \
             CPU time; their figures are suspect):\n\n",
        );
        doc.push_str(&st);
    }
    doc.push_str("\n## Machine\n\n");
    for m in all("machine") {
        let _ = writeln!(doc, "- {m}");
    }
    for c in all("client") {
        let _ = writeln!(doc, "- {c}");
    }
    doc.push_str("\n## How each row is measured\n\n");
    doc.push_str(METHOD);
    let notes = all("note");
    if !notes.is_empty() {
        doc.push_str("\n## Notes on this run\n\n");
        for n in notes {
            let _ = writeln!(doc, "- {n}");
        }
    }
    let cmds = all("cmd");
    if !cmds.is_empty() {
        doc.push_str(
            "\n## Exact commands\n\nEvery distinct command the run executed, in order \
             (`$RUN` is the run directory, `$RPORT`/`$FPORT` the Redis/Ferrite ports, \
             `$PID` the server's process id, `$N` sized from the previous run; each load \
             ran once per side and round).\n\n```sh\n",
        );
        for c in cmds {
            let _ = writeln!(doc, "{c}");
        }
        doc.push_str("```\n");
    }

    if a.table_only {
        print!("{tbl}");
        if !f.is_empty() {
            print!("\nFailed runs:\n{f}");
        }
    } else {
        print!("{doc}");
    }
    if let Some(out) = &a.out {
        if let Some(dir) = out.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        std::fs::write(out, &doc)
            .map_err(|e| Error::msg(format!("write {}: {e}", out.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        let text = "none\tx\tXADD\tredis\t1\tok\tops_s=100 p50_ms=1 p99_ms=2 p999_ms=3\n\
                    none\tx\tXADD\tferrite\t1\tok\tops_s=150 p50_ms=1 p99_ms=1 p999_ms=6\n\
                    none\tx\tXADD\tredis\t2\tok\tops_s=300 p50_ms=1 p99_ms=2 p999_ms=3\n\
                    none\tx\tXADD\tferrite\t2\tfailed\terror=boom\n\
                    none\tx\tXADD\tredis\t3\tok\tops_s=200 p50_ms=1 p99_ms=2 p999_ms=3\n";
        let runs = read_runs(text).unwrap();
        let t = table(&runs, false);
        assert!(t.contains("| XADD | none | ops/s ↑ | 200 | 150 (1 of 2 runs failed) | 0.75 |"));
        assert!(t.contains(
            "| 1.00 / 2.00 / 3.00 | 1.00 / 1.00 / 6.00 (1 of 2 runs failed) | 1.00 / 0.50 / 2.00 |"
        ));
        assert!(failures(&runs).contains("boom"));
    }

    #[test]
    fn self_check_noise_skips_paced_throughput() {
        let text = "none\ta\tA\tredis\t1\tok\tops_s=100 p99_ms=2\n\
                    none\ta\tA\tferrite\t1\tok\tops_s=80 p99_ms=3\n\
                    none\tb\tB\tredis\t1\tok\tconsumed_s=10 offered_rate=10\n\
                    none\tb\tB\tferrite\t1\tok\tconsumed_s=5 offered_rate=10\n";
        let n = noise_summary(&read_runs(text).unwrap());
        assert!(n.contains("throughput (rows 1–3, saturated work queue): ratios 0.80–0.80, median 0.80 (over 1 rows)"), "{n}");
        assert!(n.contains("p99 latency: ratios 1.50–1.50"), "{n}");
    }

    #[test]
    fn rounds_with_stolen_cpu_are_listed() {
        let text = "none\tx\tXADD\tredis\t1\tok\tops_s=100 steal_pct=0.4 idle_pct=20.0\n\
                    none\tx\tXADD\tferrite\t1\tok\tops_s=45 steal_pct=31.5 idle_pct=40.2\n\
                    none\tx\tXADD\tferrite\t2\tok\tops_s=150\n";
        let runs = read_runs(text).unwrap();
        let notes = steal_notes(&runs);
        assert_eq!(
            notes,
            "- x / none / ferrite / round 1: steal 31.5% of the machine's CPU time, idle 40.2%\n"
        );
    }

    #[test]
    fn formats_counts() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), Some(2.5));
    }
}
