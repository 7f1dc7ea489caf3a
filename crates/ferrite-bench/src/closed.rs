//! Closed-loop loads: N clients, each sends a pipeline of P commands, waits
//! for all P replies, and repeats (like `redis-benchmark -c N -P P`).
//!
//! Rows 1-3 of the benchmark (XADD to one stream, XADD over many streams,
//! XRANGE COUNT 100), plus `fill`, which loads a stream for later rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use tokio::task::JoinSet;

use crate::bail;
use crate::error::{Error, Result};
use crate::resp::{self, expect_id, expect_int, loopback_addr, Conn, Shape, U64Str};
use crate::stats::{now_ns, rate, ResultLine, Rng, Samples, Window};

/// The entry every load writes: `symbol BTC price 42000.5 volume 3`.
pub const PAYLOAD: [&[u8]; 6] = [b"symbol", b"BTC", b"price", b"42000.5", b"volume", b"3"];

/// Where to send load.
#[derive(Args, Clone, Debug)]
pub struct Target {
    /// Server address; loopback only (127.0.0.0/8 or ::1).
    #[arg(long, default_value = "127.0.0.1:6379")]
    pub addr: String,
    /// Longest wait for any one reply, connect or write, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub reply_timeout: f64,
}

impl Target {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.reply_timeout.max(0.001))
    }
    pub async fn connect(&self) -> Result<Conn> {
        Conn::connect(loopback_addr(&self.addr)?, self.timeout()).await
    }
    pub async fn connect_many(&self, n: usize) -> Result<Vec<Conn>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.connect().await?);
        }
        Ok(v)
    }
}

/// How long a timed load runs.
#[derive(Args, Clone, Debug)]
pub struct Timing {
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Hard cap on operations over all clients, whatever the duration.
    #[arg(long, default_value_t = 50_000_000)]
    pub max_ops: u64,
}

#[derive(Args, Debug)]
pub struct XaddArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub timing: Timing,
    /// Concurrent connections.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Commands in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Number of streams; with more than one, each XADD picks `KEY:<i>` at random.
    #[arg(long, default_value_t = 1)]
    pub streams: u64,
    #[arg(long, default_value = "bench:xadd")]
    pub key: String,
    /// Offered XADDs per second over all clients (0: closed loop). Paced
    /// loads send on a fixed schedule in 1 ms ticks and time each XADD
    /// from when it was due, so a stall is counted for every command it
    /// delays (no coordinated omission); `--pipeline` is then ignored.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// With `--rate`: write every XADD slower than `--slow-ms` to this
    /// file, one line `<due> <latency>` in nanoseconds, `<due>` on
    /// `CLOCK_MONOTONIC` (the clock of `perf record -k mono`), so that the
    /// tail can be lined up with a trace of the server (at most 100,000
    /// lines per client).
    #[arg(long)]
    pub slow_log: Option<std::path::PathBuf>,
    /// What `--slow-log` counts as slow, in milliseconds.
    #[arg(long, default_value_t = 2.0)]
    pub slow_ms: f64,
}

#[derive(Args, Debug)]
pub struct XrangeArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub timing: Timing,
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// A stream filled by `fill --explicit-ids` (IDs 1-0 ..= ENTRIES-0).
    #[arg(long, default_value = "bench:xrange")]
    pub key: String,
    /// Entries in that stream.
    #[arg(long)]
    pub entries: u64,
    /// Entries per XRANGE (`COUNT`), from a random start ID.
    #[arg(long, default_value_t = 100)]
    pub count: u64,
}

#[derive(Args, Debug)]
pub struct FillArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long)]
    pub key: String,
    /// Entries to append.
    #[arg(long)]
    pub count: u64,
    /// XADDs in flight (one connection).
    #[arg(long, default_value_t = 1000)]
    pub pipeline: usize,
    /// Use IDs `<n>-0` from --first-id on instead of `*`.
    #[arg(long)]
    pub explicit_ids: bool,
    #[arg(long, default_value_t = 1)]
    pub first_id: u64,
    /// After filling, check that XLEN equals this.
    #[arg(long)]
    pub expect_len: Option<u64>,
    /// Give up (error) after this many seconds.
    #[arg(long, default_value_t = 1800.0)]
    pub max_secs: f64,
}

enum Closed {
    Xadd {
        templates: Vec<Bytes>,
    },
    Xrange {
        key: Bytes,
        entries: u64,
        count: u64,
        count_arg: Bytes,
    },
}

impl Closed {
    #[inline]
    fn push(&self, c: &mut Conn, rng: &mut Rng) {
        match self {
            Closed::Xadd { templates } => {
                let i = if templates.len() == 1 {
                    0
                } else {
                    rng.below(templates.len() as u64) as usize
                };
                c.push_raw(&templates[i]);
            }
            Closed::Xrange {
                key,
                entries,
                count,
                count_arg,
            } => {
                let start = 1 + rng.below(entries - count + 1);
                let mut id = Vec::with_capacity(24);
                id.extend_from_slice(U64Str::new(start).as_bytes());
                id.extend_from_slice(b"-0");
                c.push(&[b"XRANGE", key, &id, b"+", b"COUNT", count_arg]);
            }
        }
    }

    /// Reads and checks one reply. `full` parses it completely (the first
    /// reply on each connection); otherwise only its shape is checked, so
    /// that parsing big replies does not make the client the bottleneck.
    async fn read_checked(&self, c: &mut Conn, full: bool) -> Result<()> {
        let name = self.name();
        if full {
            let f = c.read().await?;
            return match self {
                Closed::Xadd { .. } => expect_id(&f, name),
                Closed::Xrange { count, .. } => {
                    let n = resp::range_entries(&f, name)?.len() as u64;
                    if n != *count {
                        bail!("XRANGE returned {n} entries, expected {count} (stream not filled?)");
                    }
                    Ok(())
                }
            };
        }
        match (self, c.read_shape().await?) {
            (_, Shape::Error(e)) => bail!("{name}: server replied error: {e}"),
            (Closed::Xadd { .. }, Shape::Other(b'$')) => Ok(()),
            (Closed::Xrange { count, .. }, Shape::Array(n)) if n == *count as i64 => Ok(()),
            (Closed::Xrange { count, .. }, Shape::Array(n)) => {
                bail!("XRANGE returned {n} entries, expected {count}")
            }
            (_, other) => bail!("{name}: unexpected reply {other:?}"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Closed::Xadd { .. } => "XADD",
            Closed::Xrange { .. } => "XRANGE",
        }
    }
}

struct TaskOut {
    ops: u64,
    /// All commands, warm-up included (for server CPU per operation).
    work: u64,
    last_done: u64,
    lat: Samples,
    /// (due, latency) of the commands slower than the slow log's bound.
    slow: Vec<(u64, u64)>,
}

/// Slow commands kept per client for `--slow-log`.
const SLOW_CAP: usize = 100_000;

/// Waits for every client and sums what they did.
async fn join_clients(set: &mut JoinSet<Result<TaskOut>>, name: &str) -> Result<TaskOut> {
    let mut all = TaskOut {
        ops: 0,
        work: 0,
        last_done: 0,
        lat: Samples::with_cap(0),
        slow: Vec::new(),
    };
    while let Some(r) = set.join_next().await {
        let out = r?.map_err(|e| Error::msg(format!("{name} client: {e}")))?;
        all.ops += out.ops;
        all.work += out.work;
        all.last_done = all.last_done.max(out.last_done);
        all.lat.merge(out.lat);
        all.slow.extend(out.slow);
    }
    Ok(all)
}

/// Runs `w` closed-loop and returns ops/s plus per-request latency (per
/// pipeline batch when `pipeline > 1`).
async fn run_closed(
    w: Closed,
    target: &Target,
    timing: &Timing,
    clients: usize,
    pipeline: usize,
) -> Result<ResultLine> {
    if clients == 0 || pipeline == 0 {
        bail!("--clients and --pipeline must be at least 1");
    }
    let w = Arc::new(w);
    let conns = target.connect_many(clients).await?;
    let budget = (timing.max_ops / clients as u64).max(pipeline as u64);
    let cap = (4_000_000 / clients).max(10_000);
    let win = Window::starting_now(timing.warmup, timing.duration);
    let mut set = JoinSet::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let w = Arc::clone(&w);
        set.spawn(async move {
            let mut rng = Rng::new(i as u64 + 1);
            let mut out = TaskOut {
                ops: 0,
                work: 0,
                last_done: 0,
                lat: Samples::with_cap(cap),
                slow: Vec::new(),
            };
            let mut sent = 0u64;
            while sent < budget {
                let t = now_ns();
                if t >= win.end {
                    break;
                }
                for _ in 0..pipeline {
                    w.push(&mut c, &mut rng);
                }
                c.flush().await?;
                for i in 0..pipeline {
                    w.read_checked(&mut c, sent == 0 && i == 0).await?;
                }
                let d = now_ns();
                sent += pipeline as u64;
                if win.counts(t) {
                    out.ops += pipeline as u64;
                    out.lat.push(d - t);
                    out.last_done = d;
                }
            }
            out.work = sent;
            Ok::<_, Error>(out)
        });
    }
    let TaskOut {
        ops,
        work,
        last_done,
        lat,
        ..
    } = join_clients(&mut set, w.name()).await?;
    let span = last_done.saturating_sub(win.measure_start);
    let ops_s = rate(ops, span);
    let mut r = ResultLine::new();
    r.num("ops_s", ops_s)
        .int("ops", ops)
        .num("secs", span as f64 / 1e9)
        .int("work", work);
    if let Closed::Xrange { count, .. } = &*w {
        r.num("entries_s", ops_s * *count as f64);
    }
    r.int("clients", clients as u64)
        .int("pipeline", pipeline as u64)
        .text("lat_unit", if pipeline > 1 { "batch" } else { "request" })
        .int("lat_dropped", lat.dropped);
    r.latency(lat.percentiles());
    Ok(r)
}

pub async fn xadd(a: XaddArgs) -> Result<ResultLine> {
    if a.streams == 0 {
        bail!("--streams must be at least 1");
    }
    let templates = (0..a.streams)
        .map(|i| {
            let key = if a.streams == 1 {
                a.key.clone()
            } else {
                format!("{}:{i}", a.key)
            };
            let mut args: Vec<&[u8]> = vec![b"XADD", key.as_bytes(), b"*"];
            args.extend_from_slice(&PAYLOAD);
            resp::encoded(&args)
        })
        .collect();
    let w = Closed::Xadd { templates };
    let mut r = if a.rate > 0.0 {
        let slow = a.slow_log.as_ref().map(|_| (a.slow_ms * 1e6) as u64);
        let (r, slow) = run_paced(w, &a.target, &a.timing, a.clients, a.rate, slow).await?;
        if let Some(path) = &a.slow_log {
            write_slow_log(path, slow)?;
        }
        r
    } else {
        run_closed(w, &a.target, &a.timing, a.clients, a.pipeline).await?
    };
    r.int("streams", a.streams);
    Ok(r)
}

/// Most commands one client sends at once when it has fallen behind.
const MAX_BURST: u64 = 10_000;

/// When command `k` (0-based) of a client paced at `per_sec` from `start`
/// is due, rounded up to the client's 1 ms tick: the schedule it is timed
/// from.
fn due_tick(start: u64, k: u64, per_sec: f64) -> u64 {
    let due = ((k + 1) as f64 * 1e9 / per_sec).ceil() as u64;
    start + due.div_ceil(1_000_000) * 1_000_000
}

/// Runs `w` open-loop at `rate` commands per second over `clients`
/// connections. Each client wakes on its own 1 ms tick (the clients'
/// ticks are staggered over the millisecond), sends every command due by
/// then in one write and reads their replies. A command's latency runs
/// from when it was due to its reply, except that a client's own timer
/// waking late is not counted: the clock starts at the later of the due
/// tick and the client's last wake from sleep. Commands that fell due
/// while the client waited for replies are timed from their due ticks,
/// so a server stall counts once for every command it held back.
async fn run_paced(
    w: Closed,
    target: &Target,
    timing: &Timing,
    clients: usize,
    offered: f64,
    slow_ns: Option<u64>,
) -> Result<(ResultLine, Vec<(u64, u64)>)> {
    let slow_ns = slow_ns.unwrap_or(u64::MAX);
    if clients == 0 || !offered.is_finite() {
        bail!("--clients must be at least 1 and --rate finite");
    }
    let per_sec = offered / clients as f64;
    let w = Arc::new(w);
    let conns = target.connect_many(clients).await?;
    let budget = timing.max_ops / clients as u64;
    let cap = (8_000_000 / clients).max(10_000);
    let win = Window::starting_now(timing.warmup, timing.duration);
    // One base for both clocks: tokio's timer and `now_ns`.
    let (base_tokio, base_ns) = (tokio::time::Instant::now(), now_ns());
    let at = move |ns: u64| base_tokio + Duration::from_nanos(ns.saturating_sub(base_ns));
    let mut set = JoinSet::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let w = Arc::clone(&w);
        let start = base_ns + (i as u64 * 1_000_000) / clients as u64;
        set.spawn(async move {
            let mut rng = Rng::new(i as u64 + 1);
            let mut out = TaskOut {
                ops: 0,
                work: 0,
                last_done: 0,
                lat: Samples::with_cap(cap),
                slow: Vec::new(),
            };
            let mut sent = 0u64;
            let mut woke = start;
            while sent < budget {
                let now = now_ns();
                if now >= win.end {
                    break;
                }
                let due = (now.saturating_sub(start) as f64 * per_sec / 1e9) as u64;
                let n = due.saturating_sub(sent).min(MAX_BURST);
                for _ in 0..n {
                    w.push(&mut c, &mut rng);
                }
                c.flush().await?;
                for k in sent..sent + n {
                    w.read_checked(&mut c, k == 0).await?;
                    let d = now_ns();
                    let from = due_tick(start, k, per_sec).max(woke);
                    if win.counts(from) {
                        out.ops += 1;
                        let took = d.saturating_sub(from);
                        if took > slow_ns && out.slow.len() < SLOW_CAP {
                            out.slow.push((from, took));
                        }
                        out.lat.push(took);
                        out.last_done = d;
                    }
                }
                sent += n;
                let next = due_tick(start, sent, per_sec);
                if next > now_ns() {
                    tokio::time::sleep_until(at(next)).await;
                    woke = now_ns();
                }
            }
            out.work = sent;
            Ok::<_, Error>(out)
        });
    }
    let TaskOut {
        ops,
        work,
        last_done,
        lat,
        slow,
    } = join_clients(&mut set, w.name()).await?;
    let span = last_done.saturating_sub(win.measure_start);
    let mut r = ResultLine::new();
    r.num("ops_s", rate(ops, span))
        .int("ops", ops)
        .num("secs", span as f64 / 1e9)
        .int("work", work)
        .num("offered_rate", offered)
        .int("clients", clients as u64)
        .text("lat_unit", "request_from_due")
        .int("lat_dropped", lat.dropped);
    r.latency(lat.percentiles());
    Ok((r, slow))
}

/// Writes `--slow-log`: `<due> <latency>` per line, nanoseconds, `<due>`
/// on `CLOCK_MONOTONIC`, in order of due time.
fn write_slow_log(path: &std::path::Path, mut slow: Vec<(u64, u64)>) -> Result<()> {
    use std::io::Write;
    slow.sort_unstable();
    let off = crate::stats::monotonic_offset_ns();
    let f = std::fs::File::create(path)
        .map_err(|e| Error::msg(format!("--slow-log {}: {e}", path.display())))?;
    let mut w = std::io::BufWriter::new(f);
    for (due, took) in slow {
        writeln!(w, "{} {took}", due + off)
            .map_err(|e| Error::msg(format!("--slow-log {}: {e}", path.display())))?;
    }
    w.flush()
        .map_err(|e| Error::msg(format!("--slow-log {}: {e}", path.display())))?;
    Ok(())
}

pub async fn xrange(a: XrangeArgs) -> Result<ResultLine> {
    if a.count == 0 || a.entries < a.count {
        bail!(
            "--entries ({}) must be at least --count ({}) and count > 0",
            a.entries,
            a.count
        );
    }
    let w = Closed::Xrange {
        key: Bytes::from(a.key.clone()),
        entries: a.entries,
        count: a.count,
        count_arg: Bytes::from(a.count.to_string()),
    };
    run_closed(w, &a.target, &a.timing, a.clients, a.pipeline).await
}

/// Appends `count` entries to one stream over one pipelined connection.
pub async fn fill(a: FillArgs) -> Result<ResultLine> {
    if a.pipeline == 0 {
        bail!("--pipeline must be at least 1");
    }
    let mut c = a.target.connect().await?;
    let started = Instant::now();
    let limit = Duration::from_secs_f64(a.max_secs.max(0.0));
    let star = resp::encoded(&{
        let mut v: Vec<&[u8]> = vec![b"XADD", a.key.as_bytes(), b"*"];
        v.extend_from_slice(&PAYLOAD);
        v
    });
    let mut done = 0u64;
    while done < a.count {
        if started.elapsed() > limit {
            bail!(
                "fill {}: only {done} of {} entries after {:?} (--max-secs)",
                a.key,
                a.count,
                limit
            );
        }
        let batch = (a.count - done).min(a.pipeline as u64);
        for i in 0..batch {
            if a.explicit_ids {
                let mut id = Vec::with_capacity(24);
                id.extend_from_slice(U64Str::new(a.first_id + done + i).as_bytes());
                id.extend_from_slice(b"-0");
                let mut args: Vec<&[u8]> = vec![b"XADD", a.key.as_bytes(), &id];
                args.extend_from_slice(&PAYLOAD);
                c.push(&args);
            } else {
                c.push_raw(&star);
            }
        }
        c.flush().await?;
        for _ in 0..batch {
            let f = c.read().await?;
            expect_id(&f, "XADD (fill)")?;
        }
        done += batch;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut r = ResultLine::new();
    r.int("entries", done)
        .num("secs", secs)
        .num("ops_s", done as f64 / secs.max(1e-9));
    if let Some(want) = a.expect_len {
        let f = c.call(&[b"XLEN", a.key.as_bytes()]).await?;
        let got = expect_int(&f, "XLEN")?;
        if got != want as i64 {
            bail!("fill {}: XLEN is {got}, expected {want}", a.key);
        }
        r.int("xlen", got as u64);
    }
    Ok(r)
}
