//! The seed scenarios of docs/pipelines.md, run from their example files
//! (`examples/pipelines/*.redis`, redis-cli syntax) through the real binary,
//! each checked against a result computed offline here from the same
//! seeded input: page views per minute, a fraud alert over an hour sliding
//! by a minute, 1-minute VWAP/TWAP candles (a stream and a hash per symbol), session
//! summaries, a price alert.
//!
//! Inputs arrive out of order by less than each pipeline's WATERMARK, so
//! no entry is late and the closed windows' results are exactly those of
//! bucketing all the input offline. Every window closed by the final
//! watermark must be in the sink exactly once.
mod common;

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::conn::RespConn;
use common::pipes::caught_up;
use common::server::{Server, TempDir};
use common::state::{call, call_str, int, items, pipeline, text, xrange_all, Entry};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
/// 2023-11-14T22:14:00Z: minute-aligned, far from the epoch.
const T0: i64 = 1_700_000_040_000;

fn start(label: &str) -> (TempDir, Server, RespConn) {
    let dir = TempDir::new(label).unwrap_or_else(|e| panic!("{e}"));
    let (s, c) = common::pipes::start(label, &dir, &[]);
    (dir, s, c)
}

/// Sends every command of an example file (comments and blank lines
/// skipped); each must reply OK.
fn run_example(c: &mut RespConn, text_: &str) {
    for line in text_.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let args = common::script::split_args(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let r = call(c, &args);
        assert!(r.text() == Some(b"OK"), "{line} -> {}", r.render());
    }
}

/// XADDs in pipelines of 500.
fn add_all(c: &mut RespConn, cmds: Vec<Vec<Vec<u8>>>) {
    for chunk in cmds.chunks(500) {
        let (replies, failure) = pipeline(c, chunk);
        assert!(failure.is_none(), "{failure:?}");
        for r in replies {
            assert!(!r.is_error(), "{}", r.render());
        }
    }
}

fn xadd(key: &str, id: &str, fields: &[(&str, String)]) -> Vec<Vec<u8>> {
    let mut v = vec![
        b"XADD".to_vec(),
        key.as_bytes().to_vec(),
        id.as_bytes().to_vec(),
    ];
    for (f, val) in fields {
        v.push(f.as_bytes().to_vec());
        v.push(val.as_bytes().to_vec());
    }
    v
}

fn get(e: &Entry, k: &str) -> Option<String> {
    e.1.iter()
        .find(|(n, _)| n == k.as_bytes())
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

fn num(e: &Entry, k: &str) -> f64 {
    get(e, k)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{k} of {e:?}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// The sink as a map keyed by (key, window_start); a window twice fails.
fn by_window(sink: &[Entry], key: &str) -> BTreeMap<(String, i64), Entry> {
    let mut m = BTreeMap::new();
    for e in sink {
        let k = get(e, key).unwrap_or_default();
        let s = num(e, "window_start") as i64;
        assert!(get(e, "_rev").is_none(), "no revisions expected: {e:?}");
        let dup = m.insert((k.clone(), s), e.clone());
        assert!(dup.is_none(), "window ({k}, {s}) written twice");
    }
    m
}

#[test]
fn page_views_per_minute() {
    let (_d, _s, mut c) = start("scenario-views");
    run_example(
        &mut c,
        include_str!("../examples/pipelines/page_views.redis"),
    );
    let mut rng = StdRng::seed_from_u64(1);
    let pages = ["/", "/docs", "/pricing", "/blog", "/signup"];
    let mut t = T0;
    let mut cmds = Vec::new();
    let mut want: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let mut clicks = Vec::new();
    for seq in 0..3_000u64 {
        t += rng.gen_range(0..400);
        let page = pages[rng.gen_range(0..pages.len())];
        clicks.push((t, page));
        cmds.push(xadd(
            "clicks",
            &format!("{t}-{seq}"),
            &[("page", page.into())],
        ));
    }
    add_all(&mut c, cmds);
    caught_up(&mut c, "page_views");
    for &(ts, page) in &clicks {
        // Closed: the watermark (the last click's time) reached its end.
        let start = ts.div_euclid(MINUTE) * MINUTE;
        if start + MINUTE <= t {
            *want.entry((page.to_string(), start)).or_default() += 1;
        }
    }
    let got = by_window(&xrange_all(&mut c, "page_views_1m"), "page");
    assert_eq!(got.len(), want.len());
    for ((page, start), n) in &want {
        let e = &got[&(page.clone(), *start)];
        assert_eq!(num(e, "views") as i64, *n, "{e:?}");
        assert_eq!(num(e, "window_end") as i64, start + MINUTE, "{e:?}");
    }
}

#[test]
fn fraud_alert_over_an_hour_sliding_by_a_minute() {
    let (_d, _s, mut c) = start("scenario-fraud");
    run_example(
        &mut c,
        include_str!("../examples/pipelines/fraud_alert.redis"),
    );
    let mut rng = StdRng::seed_from_u64(2);
    let mut pays: Vec<(i64, String, i64)> = Vec::new();
    let mut t = T0;
    for _ in 0..2_000 {
        t += rng.gen_range(0..10_000);
        let card = format!("card{}", rng.gen_range(0..30));
        // Two cards spend big for a while: they must raise alerts.
        let big = (card == "card7" && (T0 + HOUR..T0 + HOUR + 20 * MINUTE).contains(&t))
            || (card == "card13" && t > T0 + 2 * HOUR);
        let amount = if big {
            rng.gen_range(2_000..4_000)
        } else {
            rng.gen_range(1..300)
        };
        pays.push((t, card, amount));
    }
    // Out of order by up to 4 s (WATERMARK is 5 s): reorder neighbours.
    let mut sent = pays.clone();
    for i in 1..sent.len() {
        if sent[i].0 - sent[i - 1].0 < 4_000 && rng.gen_bool(0.5) {
            sent.swap(i, i - 1);
        }
    }
    let max_ts = pays.iter().map(|p| p.0).max().unwrap_or(0);
    let cmds = sent
        .iter()
        .map(|(ts, card, amount)| {
            xadd(
                "payments",
                "*",
                &[
                    ("card", card.clone()),
                    ("amount", amount.to_string()),
                    ("ts", ts.to_string()),
                ],
            )
        })
        .collect();
    add_all(&mut c, cmds);
    caught_up(&mut c, "fraud");
    // Offline: every hour-long window starting on a minute, per card.
    let wm = max_ts - 5_000;
    let mut sums: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    for (ts, card, amount) in &pays {
        let last_start = ts.div_euclid(MINUTE) * MINUTE;
        let mut s = last_start;
        while s > ts - HOUR {
            if s + HOUR <= wm {
                let w = sums.entry((card.clone(), s)).or_default();
                w.0 += amount;
                w.1 += 1;
            }
            s -= MINUTE;
        }
    }
    let want: BTreeMap<_, _> = sums.into_iter().filter(|(_, v)| v.0 > 10_000).collect();
    assert!(
        want.keys().any(|k| k.0 == "card7") && want.keys().any(|k| k.0 == "card13"),
        "the input should raise alerts"
    );
    let got = by_window(&xrange_all(&mut c, "fraud_alerts"), "card");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, (total, n)) in &want {
        let e = &got[k];
        assert_eq!(num(e, "total") as i64, *total, "{e:?}");
        assert_eq!(num(e, "payments") as i64, *n, "{e:?}");
        assert_eq!(num(e, "window_end") as i64, k.1 + HOUR, "{e:?}");
    }
}

struct Trade {
    ts: i64,
    seq: usize,
    symbol: &'static str,
    price: f64,
    volume: i64,
}

#[test]
fn vwap_candles_per_symbol_and_the_price_alert() {
    let (_d, _s, mut c) = start("scenario-candles");
    run_example(&mut c, include_str!("../examples/pipelines/candles.redis"));
    run_example(
        &mut c,
        include_str!("../examples/pipelines/price_alert.redis"),
    );
    let mut rng = StdRng::seed_from_u64(3);
    let symbols = ["BTC", "ETH", "SOL"];
    let mut price = [50_000.0f64, 3_000.0, 150.0];
    let mut trades = Vec::new();
    let mut t = T0;
    for seq in 0..4_000 {
        t += rng.gen_range(0..300);
        let i = rng.gen_range(0..symbols.len());
        price[i] *= 1.0 + rng.gen_range(-0.002..0.002);
        // Two decimals, as a feed would send them.
        let p = (price[i] * 100.0).round() / 100.0;
        trades.push(Trade {
            ts: t,
            seq,
            symbol: symbols[i],
            price: p,
            volume: rng.gen_range(0..50),
        });
    }
    // Out of order by up to 1.5 s (WATERMARK 2000): no trade is late.
    let mut order: Vec<usize> = (0..trades.len()).collect();
    for i in 1..order.len() {
        if trades[order[i]].ts - trades[order[i - 1]].ts < 1_500 && rng.gen_bool(0.3) {
            order.swap(i, i - 1);
        }
    }
    let cmds = order
        .iter()
        .map(|&i| {
            let tr = &trades[i];
            xadd(
                "trades",
                "*",
                &[
                    ("symbol", tr.symbol.into()),
                    ("price", format!("{:.2}", tr.price)),
                    ("volume", tr.volume.to_string()),
                    ("ts", tr.ts.to_string()),
                ],
            )
        })
        .collect();
    add_all(&mut c, cmds);
    for p in ["vwap_1m", "candle_latest", "price_alert"] {
        caught_up(&mut c, p);
    }
    // Offline candles: bucket by minute, order by (event time, arrival).
    let arrival: BTreeMap<usize, usize> = order.iter().enumerate().map(|(a, &i)| (i, a)).collect();
    let wm = t - 2_000;
    let mut buckets: BTreeMap<(String, i64), Vec<&Trade>> = BTreeMap::new();
    for tr in &trades {
        let start = tr.ts.div_euclid(MINUTE) * MINUTE;
        if start + MINUTE <= wm {
            buckets
                .entry((tr.symbol.to_string(), start))
                .or_default()
                .push(tr);
        }
    }
    let got = by_window(&xrange_all(&mut c, "vwap_1m"), "symbol");
    assert_eq!(got.len(), buckets.len());
    // Every symbol's trades by (event time, arrival), for TWAP's carried-in
    // price (the last one before the window).
    let mut timeline: BTreeMap<&str, Vec<&Trade>> = BTreeMap::new();
    for tr in &trades {
        timeline.entry(tr.symbol).or_default().push(tr);
    }
    for v in timeline.values_mut() {
        v.sort_by_key(|tr| (tr.ts, arrival[&tr.seq]));
    }
    let mut latest: BTreeMap<String, i64> = BTreeMap::new();
    for ((sym, start), mut b) in buckets {
        b.sort_by_key(|tr| (tr.ts, arrival[&tr.seq]));
        let e = &got[&(sym.clone(), start)];
        let vol: i64 = b.iter().map(|tr| tr.volume).sum();
        let pv: f64 = b.iter().map(|tr| tr.price * tr.volume as f64).sum();
        if vol == 0 {
            assert!(get(e, "vwap").is_none(), "VWAP of no volume is NULL: {e:?}");
        } else {
            assert!(
                close(num(e, "vwap"), pv / vol as f64),
                "{e:?} vs {}",
                pv / vol as f64
            );
        }
        assert_eq!(num(e, "volume") as i64, vol, "{e:?}");
        assert_eq!(num(e, "trades") as usize, b.len(), "{e:?}");
        let first = b.first().map_or(0.0, |tr| tr.price);
        let last = b.last().map_or(0.0, |tr| tr.price);
        let hi = b.iter().map(|tr| tr.price).fold(f64::MIN, f64::max);
        let lo = b.iter().map(|tr| tr.price).fold(f64::MAX, f64::min);
        // TWAP: each price holds until the next trade, the last until the
        // window's end; the price before the window holds from its start.
        let end = start + MINUTE;
        let carry = timeline[sym.as_str()]
            .iter()
            .take_while(|tr| tr.ts < start)
            .last()
            .map(|tr| tr.price);
        let mut area = 0.0;
        let mut from = match carry {
            Some(_) => start,
            None => b[0].ts,
        };
        let mut held = carry.unwrap_or(b[0].price);
        for tr in &b {
            area += held * (tr.ts - from) as f64;
            from = tr.ts;
            held = tr.price;
        }
        area += held * (end - from) as f64;
        let span = end - if carry.is_some() { start } else { b[0].ts };
        let twap = area / span as f64;
        assert!(
            (num(e, "twap") - twap).abs() <= 1e-9 * twap.abs(),
            "twap of {e:?}: want {twap}"
        );
        for (f, v) in [("open", first), ("close", last), ("high", hi), ("low", lo)] {
            assert!(close(num(e, f), v), "{f} of {e:?}: want {v}");
        }
        latest.insert(sym, start);
    }
    // The hash per symbol holds its latest closed candle.
    for (sym, start) in latest {
        let h = call_str(&mut c, &["HGETALL", &format!("candle:{sym}")]);
        let kv: BTreeMap<String, String> = items(&h)
            .chunks(2)
            .map(|p| (text(&p[0]), text(&p[1])))
            .collect();
        assert_eq!(kv.get("window_start"), Some(&start.to_string()), "{kv:?}");
        let ttl = int(&call_str(&mut c, &["PTTL", &format!("candle:{sym}")]));
        assert!(ttl > 0 && ttl <= HOUR, "PTTL {ttl}");
    }
    // The price alert: every trade above 50,000, in arrival order.
    let alerts: Vec<(String, String)> = xrange_all(&mut c, "alerts")
        .iter()
        .map(|e| {
            (
                get(e, "symbol").unwrap_or_default(),
                get(e, "ts").unwrap_or_default(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = order
        .iter()
        .map(|&i| &trades[i])
        .filter(|tr| tr.price > 50_000.0)
        .map(|tr| (tr.symbol.to_string(), tr.ts.to_string()))
        .collect();
    assert!(!want.is_empty());
    assert_eq!(alerts, want);
    assert!(xrange_all(&mut c, "trades_late").is_empty());
}

#[test]
fn session_summaries_per_user() {
    let (_d, _s, mut c) = start("scenario-sessions");
    run_example(&mut c, include_str!("../examples/pipelines/sessions.redis"));
    let mut rng = StdRng::seed_from_u64(4);
    let gap = 30 * MINUTE;
    let mut events: Vec<(i64, String, i64)> = Vec::new();
    let mut t = T0;
    for _ in 0..3_000 {
        // Mostly busy, with quiet spells longer than the gap.
        t += if rng.gen_bool(0.01) {
            rng.gen_range(gap..3 * gap)
        } else {
            rng.gen_range(0..20_000)
        };
        let user = format!("u{}", rng.gen_range(0..40));
        events.push((t, user, rng.gen_range(0..100)));
    }
    let mut sent = events.clone();
    for i in 1..sent.len() {
        if sent[i].0 - sent[i - 1].0 < 8_000 && rng.gen_bool(0.5) {
            sent.swap(i, i - 1);
        }
    }
    let cmds = sent
        .iter()
        .map(|(ts, user, spent)| {
            xadd(
                "activity",
                "*",
                &[
                    ("user", user.clone()),
                    ("spent", spent.to_string()),
                    ("ts", ts.to_string()),
                ],
            )
        })
        .collect();
    add_all(&mut c, cmds);
    caught_up(&mut c, "sessions");
    // Offline: per user, split the sorted times where the next event is a
    // gap or more after the last one; closed when the watermark passed
    // last + gap.
    let wm = t - 10_000;
    let mut per_user: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for (ts, user, spent) in &events {
        per_user
            .entry(user.clone())
            .or_default()
            .push((*ts, *spent));
    }
    let mut want: BTreeMap<(String, i64), (i64, i64, i64)> = BTreeMap::new();
    for (user, mut ev) in per_user {
        ev.sort();
        let mut i = 0;
        while i < ev.len() {
            let (start, mut last) = (ev[i].0, ev[i].0);
            let (mut n, mut spent) = (0, 0);
            while i < ev.len() && ev[i].0 < last + gap {
                last = ev[i].0;
                n += 1;
                spent += ev[i].1;
                i += 1;
            }
            if last + gap <= wm {
                want.insert((user.clone(), start), (last + gap, n, spent));
            }
        }
    }
    let got = by_window(&xrange_all(&mut c, "user_sessions"), "user");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, (end, n, spent)) in &want {
        let e = &got[k];
        assert_eq!(num(e, "window_end") as i64, *end, "{e:?}");
        assert_eq!(num(e, "events") as i64, *n, "{e:?}");
        assert_eq!(num(e, "spent") as i64, *spent, "{e:?}");
    }
}
