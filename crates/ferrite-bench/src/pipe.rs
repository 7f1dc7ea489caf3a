//! Pipeline loads (docs/benchmarks.md, "Pipelines"):
//!
//! * `trades-fill`: a `symbol/price/volume` stream, the same on both sides;
//! * `backfill` (Ferrite only): `PIPELINE.CREATE ... FROM 0` with the
//!   filter+projection example over it, timed until it has read all of it;
//!   events per second of wall time and per CPU-second of the engine's
//!   thread (`pipelines`, read from /proc);
//! * `consumer`: the same job as users do it today, on either server: one
//!   program reads with `XREADGROUP COUNT n`, filters and projects in Rust,
//!   XADDs the results pipelined and XACKs;
//! * `pipe-latency` (Ferrite only): a paced producer XADDs entries carrying
//!   their send time, a pipeline copies them to a sink, and a reader in
//!   `XREAD BLOCK` on the sink measures XADD-to-result-visible latency.
//!
//! Each measures and prints a RESULT line; none asserts a time.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::bail;
use crate::closed::Target;
use crate::error::{Error, Result};
use crate::resp::{self, check_not_error, expect_id, Frame, U64Str};
use crate::stats::{now_ns, ResultLine, Rng, Samples};

/// The statement of issue "Pipeline engine I"'s benchmark.
pub const SQL: &str = "INSERT INTO big_trades SELECT symbol, price, volume, price * volume AS notional FROM trades WHERE volume > 10 AND symbol IN ('BTC','ETH')";
const SYMBOLS: [&str; 5] = ["BTC", "ETH", "SOL", "ADA", "XRP"];

#[derive(clap::Args, Debug)]
pub struct TradesArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, default_value = "trades")]
    pub key: String,
    #[arg(long)]
    pub count: u64,
    #[arg(long, default_value_t = 1000)]
    pub pipeline: usize,
}

/// Appends `count` trades (seeded: the same stream on both servers).
pub async fn trades_fill(a: TradesArgs) -> Result<ResultLine> {
    let mut c = a.target.connect().await?;
    let mut rng = Rng::new(7);
    fill_trades(&mut c, &a.key, a.count, a.pipeline, "trades-fill", |_| {
        let sym = SYMBOLS[rng.below(SYMBOLS.len() as u64) as usize];
        (
            b"*".to_vec(),
            sym.as_bytes().to_vec(),
            rng.below(100_000),
            rng.below(40),
        )
    })
    .await
}

/// Appends `count` entries `symbol/price/volume` pipelined by `pipeline`;
/// `next(i)` gives entry `i`'s ID, symbol, price in cents above 1.00 and
/// volume above 1.
async fn fill_trades(
    c: &mut resp::Conn,
    key: &str,
    count: u64,
    pipeline: usize,
    what: &str,
    mut next: impl FnMut(u64) -> (Vec<u8>, Vec<u8>, u64, u64),
) -> Result<ResultLine> {
    let started = Instant::now();
    let mut done = 0u64;
    while done < count {
        let batch = (count - done).min(pipeline.max(1) as u64);
        for i in 0..batch {
            let (id, sym, cents, vol) = next(done + i);
            let cents = 100 + cents;
            let price = format!("{}.{:02}", cents / 100, cents % 100);
            let volume = U64Str::new(1 + vol);
            c.push(&[
                b"XADD",
                key.as_bytes(),
                &id,
                b"symbol",
                &sym,
                b"price",
                price.as_bytes(),
                b"volume",
                volume.as_bytes(),
            ]);
        }
        c.flush().await?;
        for _ in 0..batch {
            expect_id(&c.read().await?, what)?;
        }
        done += batch;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut r = ResultLine::new();
    r.int("entries", done).num("secs", secs);
    Ok(r)
}

#[derive(clap::Args, Debug)]
pub struct TicksArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, default_value = "ticks")]
    pub key: String,
    #[arg(long)]
    pub count: u64,
    #[arg(long, default_value_t = 10_000)]
    pub symbols: u64,
    /// The first entry's time (ms); entry i is at `t0 + i`.
    #[arg(long, default_value_t = 1_700_000_040_000)]
    pub t0: u64,
    #[arg(long, default_value_t = 1000)]
    pub pipeline: usize,
}

/// Appends `count` ticks with IDs `t0+i-0` (event time 1 ms apart), a
/// seeded random symbol of `symbols`, a price and a volume each.
pub async fn ticks_fill(a: TicksArgs) -> Result<ResultLine> {
    let mut c = a.target.connect().await?;
    let mut rng = Rng::new(11);
    let syms: Vec<String> = (0..a.symbols.max(1)).map(|i| format!("S{i:05}")).collect();
    let t0 = a.t0;
    fill_trades(&mut c, &a.key, a.count, a.pipeline, "ticks-fill", |i| {
        let sym = &syms[rng.below(syms.len() as u64) as usize];
        (
            format!("{}-0", t0 + i).into_bytes(),
            sym.as_bytes().to_vec(),
            rng.below(100_000),
            rng.below(40),
        )
    })
    .await
}

#[derive(clap::Args, Debug)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub target: Target,
    /// Entries the source holds (the run ends when all are read).
    #[arg(long)]
    pub entries: u64,
    #[arg(long, default_value = "bench_backfill")]
    pub name: String,
    #[arg(long, default_value_t = 1800.0)]
    pub max_secs: f64,
    /// The statement (default: the filter+projection of "Pipeline engine I").
    #[arg(long, default_value = SQL)]
    pub sql: String,
    /// Its sink, deleted before the run.
    #[arg(long, default_value = "big_trades")]
    pub sink: String,
}

fn map_field<'a>(f: &'a Frame, name: &str) -> Option<&'a Frame> {
    match f {
        Frame::Array(v) => v
            .chunks_exact(2)
            .find(|kv| matches!(&kv[0], Frame::BulkString(k) if k.as_ref() == name.as_bytes()))
            .map(|kv| &kv[1]),
        _ => None,
    }
}

fn int_field(f: &Frame, name: &str) -> Option<i64> {
    match map_field(f, name)? {
        Frame::Integer(i) => Some(*i),
        _ => None,
    }
}

/// utime + stime (clock ticks) of the server thread named `comm`.
fn thread_ticks(pid: u64, comm: &str) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for t in dir.flatten() {
        let p = t.path();
        if std::fs::read_to_string(p.join("comm")).ok()?.trim() != comm {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("stat")).ok()?;
        // Fields after the `(comm)`: state is 3rd; utime 14th, stime 15th.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ut: u64 = f.get(11)?.parse().ok()?;
        let st: u64 = f.get(12)?.parse().ok()?;
        return Some(ut + st);
    }
    None
}

async fn server_pid(c: &mut resp::Conn) -> Result<u64> {
    let f = c.call(&[b"INFO", b"server"]).await?;
    let text = match &f {
        Frame::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => bail!("INFO: {}", resp::describe(other)),
    };
    text.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::msg("INFO server has no process_id"))
}

/// Sends a command whose error reply is expected sometimes (DROP of a
/// pipeline that may not exist).
async fn call_any(c: &mut resp::Conn, args: &[&[u8]]) -> Result<Frame> {
    c.push(args);
    c.flush().await?;
    c.read().await
}

/// Clock ticks per second (Linux's USER_HZ is 100 on every platform Ferrite
/// runs on).
const TICKS: f64 = 100.0;

pub async fn backfill(a: BackfillArgs) -> Result<ResultLine> {
    let mut c = a.target.connect().await?;
    let pid = server_pid(&mut c).await?;
    let _ = call_any(&mut c, &[b"PIPELINE.DROP", a.name.as_bytes()]).await?;
    check_not_error(c.call(&[b"DEL", a.sink.as_bytes()]).await?, "DEL")?;
    let cpu0 = thread_ticks(pid, "pipelines");
    let started = Instant::now();
    check_not_error(
        c.call(&[
            b"PIPELINE.CREATE",
            a.name.as_bytes(),
            b"FROM",
            b"0",
            b"AS",
            a.sql.as_bytes(),
        ])
        .await?,
        "PIPELINE.CREATE",
    )?;
    let limit = Duration::from_secs_f64(a.max_secs);
    let info = loop {
        let f = c.call(&[b"PIPELINE.INFO", a.name.as_bytes()]).await?;
        let read = int_field(&f, "entries_in").unwrap_or(0);
        if read as u64 >= a.entries && int_field(&f, "lag_entries") == Some(0) {
            break f;
        }
        if started.elapsed() > limit {
            bail!(
                "backfill: {read} of {} entries read after {limit:?}",
                a.entries
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    let cpu1 = thread_ticks(pid, "pipelines");
    let mut r = ResultLine::new();
    let events = int_field(&info, "entries_in").unwrap_or(0) as u64;
    r.int("events", events)
        .int(
            "results",
            int_field(&info, "entries_out").unwrap_or(0) as u64,
        )
        .num("secs", secs)
        .num("events_s", events as f64 / secs.max(1e-9))
        .int(
            "ns_per_event",
            int_field(&info, "ns_per_event").unwrap_or(0) as u64,
        )
        .int("epochs", int_field(&info, "epoch").unwrap_or(0) as u64);
    // A grouped statement's state at the end: its open windows.
    if let (Some(open), Some(bytes)) = (
        int_field(&info, "open_windows"),
        int_field(&info, "state_bytes"),
    ) {
        r.int("open_windows", open as u64)
            .int("state_bytes", bytes as u64)
            .num("bytes_per_window", bytes as f64 / (open.max(1) as f64));
    }
    if let (Some(t0), Some(t1)) = (cpu0, cpu1) {
        let cpu = (t1.saturating_sub(t0)) as f64 / TICKS;
        r.num("engine_cpu_s", cpu)
            .num("events_per_cpu_s", events as f64 / cpu.max(1e-9));
    }
    let _ = call_any(&mut c, &[b"PIPELINE.DROP", a.name.as_bytes()]).await?;
    Ok(r)
}

#[derive(clap::Args, Debug)]
pub struct ConsumerArgs {
    #[command(flatten)]
    pub target: Target,
    /// Entries the source holds (the run ends when all are processed).
    #[arg(long)]
    pub entries: u64,
    /// XREADGROUP COUNT.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    #[arg(long, default_value_t = 1800.0)]
    pub max_secs: f64,
}

/// The consumer program: XREADGROUP, filter and project, XADD the results
/// and XACK the batch in one pipelined round trip.
pub async fn consumer(a: ConsumerArgs) -> Result<ResultLine> {
    let mut c = a.target.connect().await?;
    let _ = call_any(
        &mut c,
        &[b"XGROUP", b"DESTROY", b"trades", b"bench_consumer"],
    )
    .await?;
    check_not_error(c.call(&[b"DEL", b"big_trades_c"]).await?, "DEL")?;
    check_not_error(
        c.call(&[b"XGROUP", b"CREATE", b"trades", b"bench_consumer", b"0"])
            .await?,
        "XGROUP CREATE",
    )?;
    let count = U64Str::new(a.count as u64);
    let started = Instant::now();
    let limit = Duration::from_secs_f64(a.max_secs);
    let (mut events, mut results) = (0u64, 0u64);
    while events < a.entries {
        if started.elapsed() > limit {
            bail!(
                "consumer: {events} of {} entries after {limit:?}",
                a.entries
            );
        }
        let f = c
            .call(&[
                b"XREADGROUP",
                b"GROUP",
                b"bench_consumer",
                b"c1",
                b"COUNT",
                count.as_bytes(),
                b"STREAMS",
                b"trades",
                b">",
            ])
            .await?;
        let entries = resp::read_entries(&f, "XREADGROUP")?;
        if entries.is_empty() {
            bail!("consumer: the stream ended after {events} entries");
        }
        let mut ack: Vec<Bytes> = vec![
            Bytes::from_static(b"XACK"),
            Bytes::from_static(b"trades"),
            Bytes::from_static(b"bench_consumer"),
        ];
        let mut sent = 0u64;
        for e in &entries {
            events += 1;
            ack.push(e.id.clone());
            let get = |name: &[u8]| {
                e.fields
                    .chunks_exact(2)
                    .find_map(|kv| match (&kv[0], &kv[1]) {
                        (Frame::BulkString(k), Frame::BulkString(v)) if k.as_ref() == name => {
                            Some(v.clone())
                        }
                        _ => None,
                    })
            };
            let (Some(sym), Some(price), Some(vol)) =
                (get(b"symbol"), get(b"price"), get(b"volume"))
            else {
                continue;
            };
            let volume: i64 = std::str::from_utf8(&vol)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if volume <= 10 || !(sym.as_ref() == b"BTC" || sym.as_ref() == b"ETH") {
                continue;
            }
            let p: f64 = std::str::from_utf8(&price)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            let notional = format!("{}", p * volume as f64);
            c.push(&[
                b"XADD",
                b"big_trades_c",
                b"*",
                b"symbol",
                &sym,
                b"price",
                &price,
                b"volume",
                &vol,
                b"notional",
                notional.as_bytes(),
            ]);
            sent += 1;
        }
        let ack_refs: Vec<&[u8]> = ack.iter().map(|b| b.as_ref()).collect();
        c.push(&ack_refs);
        c.flush().await?;
        for _ in 0..sent {
            expect_id(&c.read().await?, "XADD (consumer)")?;
        }
        check_not_error(c.read().await?, "XACK")?;
        results += sent;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut r = ResultLine::new();
    r.int("events", events)
        .int("results", results)
        .num("secs", secs)
        .num("events_s", events as f64 / secs.max(1e-9));
    Ok(r)
}

#[derive(clap::Args, Debug)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub target: Target,
    /// XADDs per second (paced, one connection, pipelined in 1 ms ticks).
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// The pipeline's COMMIT_INTERVAL.
    #[arg(long, default_value_t = 1)]
    pub commit_interval: u64,
    /// With a value: a tumbling window of this many ms (count per window,
    /// over the entry IDs' time) instead of the copy, and the latency of
    /// each result from its window's close: the first entry at or past
    /// `window_end` closes it, and entries come every 1/rate s, so the
    /// close is `window_end` on the wall clock (to within that gap).
    #[arg(long)]
    pub window_ms: Option<u64>,
}

/// XADD-to-result-visible latency through a pipeline.
pub async fn latency(a: LatencyArgs) -> Result<ResultLine> {
    let mut c = a.target.connect().await?;
    let _ = call_any(&mut c, &[b"PIPELINE.DROP", b"bench_latency"]).await?;
    check_not_error(c.call(&[b"DEL", b"lat_src", b"lat_out"]).await?, "DEL")?;
    let ci = U64Str::new(a.commit_interval);
    let sql = match a.window_ms {
        None => "INSERT INTO lat_out SELECT t FROM lat_src WHERE v > 0".to_string(),
        Some(w) => format!(
            "INSERT INTO lat_out SELECT window_end, count(*) AS n FROM lat_src GROUP BY TUMBLE(_ms, {})",
            w.max(1)
        ),
    };
    check_not_error(
        c.call(&[
            b"PIPELINE.CREATE",
            b"bench_latency",
            b"COMMIT_INTERVAL",
            ci.as_bytes(),
            b"AS",
            sql.as_bytes(),
        ])
        .await?,
        "PIPELINE.CREATE",
    )?;
    let mut reader = a.target.connect().await?;
    let total = a.warmup + a.duration;
    let window_ms = a.window_ms.map(|w| w.max(1));
    let expected = match window_ms {
        None => (a.rate as f64 * total) as u64,
        // The last window or two never close (no entry after them).
        Some(w) => ((total * 1000.0) as u64 / w).saturating_sub(2),
    };
    let warm_ns = now_ns() + (a.warmup * 1e9) as u64;
    let unix_ns = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    let warm_unix_ns = unix_ns() + (a.warmup * 1e9) as u64;
    let read = tokio::spawn(async move {
        let mut samples = Samples::with_cap(expected as usize);
        let mut last = Bytes::from_static(b"$");
        let mut seen = 0u64;
        let deadline = Instant::now() + Duration::from_secs_f64(total + 30.0);
        while seen < expected && Instant::now() < deadline {
            let f = reader
                .call(&[
                    b"XREAD", b"COUNT", b"10000", b"BLOCK", b"1000", b"STREAMS", b"lat_out", &last,
                ])
                .await?;
            let (now, warm) = match window_ms {
                None => (now_ns(), warm_ns),
                Some(_) => (unix_ns(), warm_unix_ns),
            };
            let entries = resp::read_entries(&f, "XREAD")?;
            for e in &entries {
                seen += 1;
                let t = match window_ms {
                    None => e.field_u64(b"t"),
                    Some(_) => e.field_u64(b"window_end").map(|ms| ms * 1_000_000),
                };
                if let Some(t) = t {
                    if t >= warm {
                        samples.push(now.saturating_sub(t));
                    }
                }
            }
            if let Some(e) = entries.last() {
                last = e.id.clone();
            }
        }
        Ok::<_, Error>((samples, seen))
    });
    let started = Instant::now();
    let per_tick = (a.rate / 1000).max(1);
    let mut tick = 0u64;
    let mut sent = 0u64;
    while started.elapsed().as_secs_f64() < total {
        let target = started + Duration::from_millis(tick);
        tokio::time::sleep_until(target.into()).await;
        for _ in 0..per_tick {
            let t = U64Str::new(now_ns());
            c.push(&[b"XADD", b"lat_src", b"*", b"v", b"1", b"t", t.as_bytes()]);
        }
        c.flush().await?;
        for _ in 0..per_tick {
            expect_id(&c.read().await?, "XADD (latency)")?;
        }
        sent += per_tick;
        tick += 1;
    }
    let (samples, seen) = read
        .await
        .map_err(|e| Error::msg(format!("reader: {e}")))??;
    let _ = call_any(&mut c, &[b"PIPELINE.DROP", b"bench_latency"]).await?;
    let mut r = ResultLine::new();
    r.int("sent", sent).int("seen", seen).int("rate", a.rate);
    r.latency(samples.percentiles());
    Ok(r)
}
