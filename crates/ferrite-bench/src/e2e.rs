//! End-to-end loads that redis-benchmark cannot express: every entry carries
//! `ts <ns>` (this process's monotonic clock when the XADD was written) and
//! the reader subtracts it from its own clock when the entry arrives.
//!
//! * `fanout`: one producer at a fixed rate, N subscribers in `XREAD BLOCK`.
//!   Each entry is delivered N times; latency is XADD-written to
//!   XREAD-reply-received, per delivery.
//! * `workqueue`: producers XADD (paced, or as fast as a backlog cap allows),
//!   consumers in one group `XREADGROUP ... >` then `XACK`. Throughput is
//!   acknowledged entries per second; latency is XADD-written to
//!   XREADGROUP-reply-received.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::bail;
use crate::closed::{Target, PAYLOAD};
use crate::error::{Error, Result};
use crate::resp::{self, check_not_error, expect_id, expect_int, Conn, U64Str};
use crate::stats::{now_ns, rate, secs_to_ns, ResultLine, Samples, Window};

/// Extra time after the measured window for in-flight entries to arrive.
const GRACE: Duration = Duration::from_secs(10);
/// Never send more than this many XADDs in one 1 ms tick (bounds catch-up).
const MAX_PER_TICK: u64 = 10_000;

#[derive(Args, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: Target,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Subscribers blocked in XREAD.
    #[arg(long, default_value_t = 50)]
    pub subscribers: usize,
    /// Producer XADDs per second (paced in 1 ms ticks).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    #[arg(long, default_value = "bench:fanout")]
    pub key: String,
}

#[derive(Args, Debug)]
pub struct WorkqueueArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    #[arg(long, default_value_t = 2)]
    pub producers: usize,
    /// Consumers in the one consumer group.
    #[arg(long, default_value_t = 10)]
    pub consumers: usize,
    /// Offered XADDs per second over all producers; 0 = as fast as the
    /// backlog cap allows (saturation).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Saturation mode: producers pause while this many entries are
    /// produced but not yet acknowledged.
    #[arg(long, default_value_t = 10_000)]
    pub backlog: u64,
    /// Saturation mode: XADDs per producer round trip.
    #[arg(long, default_value_t = 16)]
    pub pipeline: usize,
    /// XREADGROUP COUNT.
    #[arg(long, default_value_t = 10)]
    pub count: usize,
    #[arg(long, default_value = "bench:wq")]
    pub key: String,
    #[arg(long, default_value = "bench-group")]
    pub group: String,
}

/// Queues one `XADD key * ts <now> symbol BTC price 42000.5 volume 3`.
fn push_stamped_xadd(c: &mut Conn, key: &[u8]) {
    let ts = U64Str::new(now_ns());
    let mut args: Vec<&[u8]> = Vec::with_capacity(11);
    args.extend_from_slice(&[b"XADD", key, b"*", b"ts", ts.as_bytes()]);
    args.extend_from_slice(&PAYLOAD);
    c.push(&args);
}

/// XADDs at `per_sec` until `end` (1 ms ticks; a late tick catches up, at
/// most `MAX_PER_TICK` at once). Adds each acknowledged XADD to `produced`.
async fn paced_producer(
    mut c: Conn,
    key: Bytes,
    per_sec: f64,
    end: u64,
    produced: Arc<AtomicU64>,
) -> Result<u64> {
    let start = now_ns();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let now = now_ns();
        if now >= end {
            break;
        }
        let due = (((now - start) as f64 / 1e9) * per_sec) as u64;
        let n = due.saturating_sub(sent).min(MAX_PER_TICK);
        if n == 0 {
            continue;
        }
        for _ in 0..n {
            push_stamped_xadd(&mut c, &key);
        }
        c.flush().await?;
        for _ in 0..n {
            let f = c.read().await?;
            expect_id(&f, "XADD")?;
        }
        sent += n;
        produced.fetch_add(n, Ordering::AcqRel);
    }
    Ok(sent)
}

struct ReaderOut {
    got: u64,
    in_window: u64,
    lat: Samples,
}

pub async fn fanout(a: FanoutArgs) -> Result<ResultLine> {
    if a.subscribers == 0 || a.rate <= 0.0 {
        bail!("--subscribers and --rate must be positive");
    }
    let key = Bytes::from(a.key.clone());
    let mut setup = a.target.connect().await?;
    setup.call(&[b"DEL", &key]).await?;
    // BLOCK must end well before the reply timeout.
    let block_ms = 500u64;
    let mut subs = a.target.connect_many(a.subscribers).await?;
    for s in &mut subs {
        s.timeout = a.target.timeout() + Duration::from_millis(block_ms);
    }
    let producer = a.target.connect().await?;
    let win = Window::starting_now(a.warmup, a.duration);
    let hard_end = win.end + GRACE.as_nanos() as u64;
    let produced = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(u64::MAX));
    let cap = (8_000_000 / a.subscribers).max(10_000);

    let mut set = JoinSet::new();
    for mut c in subs {
        let key = key.clone();
        let total = Arc::clone(&total);
        set.spawn(async move {
            let block = U64Str::new(block_ms);
            let mut last = Bytes::from_static(b"0-0");
            let mut out = ReaderOut {
                got: 0,
                in_window: 0,
                lat: Samples::with_cap(cap),
            };
            while out.got < total.load(Ordering::Acquire) && now_ns() < hard_end {
                c.push(&[
                    b"XREAD",
                    b"COUNT",
                    b"1000",
                    b"BLOCK",
                    block.as_bytes(),
                    b"STREAMS",
                    &key,
                    &last,
                ]);
                c.flush().await?;
                let f = check_not_error(c.read().await?, "XREAD")?;
                let now = now_ns();
                let entries = resp::read_entries(&f, "XREAD")?;
                for e in &entries {
                    let Some(ts) = e.field_u64(b"ts") else {
                        bail!("XREAD: entry {:?} has no numeric ts field", e.id);
                    };
                    out.got += 1;
                    if win.counts(ts) {
                        out.in_window += 1;
                        out.lat.push(now.saturating_sub(ts));
                    }
                }
                if let Some(e) = entries.last() {
                    last = e.id.clone();
                }
            }
            Ok::<_, Error>(out)
        });
    }
    let sent = paced_producer(producer, key.clone(), a.rate, win.end, produced).await;
    let sent = match sent {
        Ok(n) => n,
        Err(e) => bail!("fan-out producer: {e}"),
    };
    total.store(sent, Ordering::Release);

    let mut got = 0u64;
    let mut in_window = 0u64;
    let mut lat = Samples::with_cap(0);
    while let Some(r) = set.join_next().await {
        let out = r?.map_err(|e| Error::msg(format!("fan-out subscriber: {e}")))?;
        got += out.got;
        in_window += out.in_window;
        lat.merge(out.lat);
    }
    setup.call(&[b"DEL", &key]).await?;
    let expected = sent * a.subscribers as u64;
    let mut r = ResultLine::new();
    r.num("deliveries_s", rate(in_window, secs_to_ns(a.duration)))
        .int("sent", sent)
        .num("rate", a.rate)
        .int("subscribers", a.subscribers as u64)
        .int("delivered", got)
        .int("work", got)
        .int("lost", expected.saturating_sub(got))
        .int("lat_dropped", lat.dropped);
    r.latency(lat.percentiles());
    Ok(r)
}

pub async fn workqueue(a: WorkqueueArgs) -> Result<ResultLine> {
    if a.producers == 0 || a.consumers == 0 || a.count == 0 || a.pipeline == 0 {
        bail!("--producers, --consumers, --count and --pipeline must be at least 1");
    }
    let key = Bytes::from(a.key.clone());
    let group = Bytes::from(a.group.clone());
    let mut setup = a.target.connect().await?;
    setup.call(&[b"DEL", &key]).await?;
    let f = setup
        .call(&[b"XGROUP", b"CREATE", &key, &group, b"0", b"MKSTREAM"])
        .await?;
    if !matches!(&f, resp::Frame::SimpleString(s) if s.as_ref() == b"OK") {
        bail!("XGROUP CREATE: expected +OK, got {}", resp::describe(&f));
    }
    let block_ms = 200u64;
    let mut consumers = a.target.connect_many(a.consumers).await?;
    for c in &mut consumers {
        c.timeout = a.target.timeout() + Duration::from_millis(block_ms);
    }
    let producers = a.target.connect_many(a.producers).await?;

    let win = Window::starting_now(a.warmup, a.duration);
    let hard_end = win.end + GRACE.as_nanos() as u64;
    let produced = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let producers_left = Arc::new(AtomicU64::new(a.producers as u64));
    let cap = (8_000_000 / a.consumers).max(10_000);

    let mut cset = JoinSet::new();
    for (i, mut c) in consumers.into_iter().enumerate() {
        let (key, group) = (key.clone(), group.clone());
        let (produced, acked, left) = (
            Arc::clone(&produced),
            Arc::clone(&acked),
            Arc::clone(&producers_left),
        );
        let name = Bytes::from(format!("c{i}"));
        let count = Bytes::from(a.count.to_string());
        set_consumer(&mut cset, async move {
            let block = U64Str::new(block_ms);
            let mut out = ReaderOut {
                got: 0,
                in_window: 0,
                lat: Samples::with_cap(cap),
            };
            loop {
                if left.load(Ordering::Acquire) == 0
                    && acked.load(Ordering::Acquire) >= produced.load(Ordering::Acquire)
                {
                    break;
                }
                if now_ns() >= hard_end {
                    break;
                }
                c.push(&[
                    b"XREADGROUP",
                    b"GROUP",
                    &group,
                    &name,
                    b"COUNT",
                    &count,
                    b"BLOCK",
                    block.as_bytes(),
                    b"STREAMS",
                    &key,
                    b">",
                ]);
                c.flush().await?;
                let f = check_not_error(c.read().await?, "XREADGROUP")?;
                let now = now_ns();
                let entries = resp::read_entries(&f, "XREADGROUP")?;
                if entries.is_empty() {
                    continue;
                }
                let mut ack: Vec<&[u8]> = Vec::with_capacity(entries.len() + 3);
                ack.extend_from_slice(&[b"XACK", &key, &group]);
                for e in &entries {
                    let Some(ts) = e.field_u64(b"ts") else {
                        bail!("XREADGROUP: entry {:?} has no numeric ts field", e.id);
                    };
                    if win.counts(ts) {
                        out.lat.push(now.saturating_sub(ts));
                    }
                    ack.push(e.id);
                }
                let n = entries.len() as u64;
                c.push(&ack);
                c.flush().await?;
                let f = check_not_error(c.read().await?, "XACK")?;
                let k = expect_int(&f, "XACK")?;
                if k != n as i64 {
                    bail!("XACK acknowledged {k} of {n} entries just delivered to this consumer");
                }
                acked.fetch_add(n, Ordering::AcqRel);
                out.got += n;
                if win.counts(now) {
                    out.in_window += n;
                }
            }
            Ok::<_, Error>(out)
        });
    }

    let mut pset = JoinSet::new();
    for c in producers {
        let key = key.clone();
        let (produced, acked, left) = (
            Arc::clone(&produced),
            Arc::clone(&acked),
            Arc::clone(&producers_left),
        );
        let per = a.rate / a.producers as f64;
        let (backlog, pipeline) = (a.backlog, a.pipeline);
        pset.spawn(async move {
            let r = if per > 0.0 {
                paced_producer(c, key, per, win.end, produced).await
            } else {
                saturating_producer(c, key, win.end, pipeline, backlog, produced, acked).await
            };
            left.fetch_sub(1, Ordering::AcqRel);
            r
        });
    }
    while let Some(r) = pset.join_next().await {
        r?.map_err(|e| Error::msg(format!("work-queue producer: {e}")))?;
    }
    let mut got = 0u64;
    let mut in_window = 0u64;
    let mut lat = Samples::with_cap(0);
    while let Some(r) = cset.join_next().await {
        let out = r?.map_err(|e| Error::msg(format!("work-queue consumer: {e}")))?;
        got += out.got;
        in_window += out.in_window;
        lat.merge(out.lat);
    }
    setup.call(&[b"DEL", &key]).await?;
    let produced = produced.load(Ordering::Acquire);
    let mut r = ResultLine::new();
    r.num("consumed_s", rate(in_window, secs_to_ns(a.duration)))
        .num("offered_rate", a.rate)
        .int("produced", produced)
        .int("acked", got)
        .int("work", got)
        .int("unconsumed", produced.saturating_sub(got))
        .int("producers", a.producers as u64)
        .int("consumers", a.consumers as u64)
        .int("lat_dropped", lat.dropped);
    r.latency(lat.percentiles());
    Ok(r)
}

fn set_consumer<F>(set: &mut JoinSet<Result<ReaderOut>>, f: F)
where
    F: std::future::Future<Output = Result<ReaderOut>> + Send + 'static,
{
    set.spawn(f);
}

/// Pipelined XADDs as fast as the server takes them, pausing while
/// `produced - acked >= backlog`.
async fn saturating_producer(
    mut c: Conn,
    key: Bytes,
    end: u64,
    pipeline: usize,
    backlog: u64,
    produced: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
) -> Result<u64> {
    let mut sent = 0u64;
    while now_ns() < end {
        let p = produced.load(Ordering::Acquire);
        if p.saturating_sub(acked.load(Ordering::Acquire)) >= backlog {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        for _ in 0..pipeline {
            push_stamped_xadd(&mut c, &key);
        }
        c.flush().await?;
        for _ in 0..pipeline {
            let f = c.read().await?;
            expect_id(&f, "XADD")?;
        }
        sent += pipeline as u64;
        produced.fetch_add(pipeline as u64, Ordering::AcqRel);
    }
    Ok(sent)
}
