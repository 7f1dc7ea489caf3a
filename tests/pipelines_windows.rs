//! Windowed pipelines through the real binary: page views per minute with
//! TUMBLE, restarts (SHUTDOWN and SIGKILL, with and without checkpoints)
//! in the middle, and each window's result exactly once; the LATE stream;
//! the time options of PIPELINE.CREATE and what PIPELINE.INFO shows.
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::conn::RespConn;
use common::pipes::{caught_up, err, failed_with, info, ok};
use common::server::{Server, TempDir};
use common::state::{call_str, field, int, text, xrange_all, Entry};

const WAIT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

const VIEWS: &str = "INSERT INTO views SELECT page, window_start, window_end, count(*) AS views \
                     FROM clicks GROUP BY page, TUMBLE(_ms, INTERVAL '1' MINUTE)";
const MINUTE: u64 = 60_000;

fn start(dir: &TempDir, extra: &[&str]) -> (Server, RespConn) {
    common::pipes::start("pipelines-windows", dir, extra)
}

fn st(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn get(e: &Entry, k: &str) -> Option<String> {
    e.1.iter()
        .find(|(n, _)| n == k.as_bytes())
        .map(|(_, v)| st(v))
}

/// Clicks of minutes `from..to`: 40 a minute over 3 pages, explicit IDs.
fn add_clicks(c: &mut RespConn, from: u64, to: u64) {
    let pages = ["/", "/docs", "/pricing"];
    for m in from..to {
        for i in 0..40u64 {
            let id = format!("{}-0", m * MINUTE + i * 1_000 + 1);
            let page = pages[((m * 7 + i * i) % 3) as usize];
            let r = call_str(c, &["XADD", "clicks", &id, "page", page]);
            assert!(!r.is_error(), "XADD: {}", r.render());
        }
    }
}

/// The results the source implies: one per page and closed minute (the
/// watermark is the last click's time: a minute closes when a later one
/// starts).
fn reference(src: &[Entry]) -> BTreeMap<(String, u64), u64> {
    let last = src.last().map_or(0, |e| e.0 .0);
    let mut m = BTreeMap::new();
    for e in src {
        let start = e.0 .0 / MINUTE * MINUTE;
        if start + MINUTE <= last {
            *m.entry((get(e, "page").unwrap_or_default(), start))
                .or_insert(0) += 1;
        }
    }
    m
}

/// The sink's results; every window exactly once.
fn results(sink: &[Entry]) -> BTreeMap<(String, u64), u64> {
    let mut m = BTreeMap::new();
    for e in sink {
        let page = get(e, "page").unwrap_or_default();
        let start: u64 = get(e, "window_start")
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX);
        let end: u64 = get(e, "window_end")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert_eq!(end, start + MINUTE, "{e:?}");
        assert!(
            get(e, "_rev").is_none(),
            "no revisions without lateness: {e:?}"
        );
        let views: u64 = get(e, "views").and_then(|v| v.parse().ok()).unwrap_or(0);
        let dup = m.insert((page.clone(), start), views);
        assert!(dup.is_none(), "window ({page}, {start}) written twice");
    }
    m
}

fn restart(
    server: &mut Server,
    c: &mut RespConn,
    dir: &TempDir,
    kill: bool,
    extra: &[&str],
) -> (Server, RespConn) {
    if kill {
        server.kill9().unwrap_or_else(|e| panic!("{e}"));
    } else {
        c.send_command(&common::state::argv(&["SHUTDOWN"]))
            .unwrap_or_else(|e| panic!("send SHUTDOWN: {e}"));
        server
            .wait_exit(EXIT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    start(dir, extra)
}

#[test]
fn page_views_per_minute_exactly_once_across_restarts() {
    let dir = TempDir::new("pipe-windows").unwrap_or_else(|e| panic!("{e}"));
    // Small checkpoints: the window state goes through checkpoint sections
    // as well as through the epochs' records.
    let ckpt: &[&str] = &["--auto-checkpoint-min-size", "1024"];
    let (mut s, mut c) = start(&dir, &[]);
    add_clicks(&mut c, 0, 3);
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "views",
            "FROM",
            "0",
            "COMMIT_INTERVAL",
            "2",
            "AS",
            VIEWS,
        ],
    );
    caught_up(&mut c, "views");
    let mut minute = 3;
    for (round, kill, extra) in [
        (1, true, &[][..]),
        (2, false, ckpt),
        (3, true, ckpt),
        (4, false, &[][..]),
        (5, true, &[][..]),
    ] {
        // Clicks arrive while the pipeline runs; the restart comes in the
        // middle of its epochs.
        add_clicks(&mut c, minute, minute + 2);
        minute += 2;
        let (s2, c2) = restart(&mut s, &mut c, &dir, kill, extra);
        s = s2;
        c = c2;
        caught_up(&mut c, "views");
        let src = xrange_all(&mut c, "clicks");
        let want = reference(&src);
        assert!(!want.is_empty());
        assert_eq!(
            results(&xrange_all(&mut c, "views")),
            want,
            "round {round} (kill: {kill})"
        );
    }
    let i = info(&mut c, "views");
    // Open: the last minute's window of each page clicked in it.
    let src = xrange_all(&mut c, "clicks");
    let last_start = src.last().map_or(0, |e| e.0 .0 / MINUTE * MINUTE);
    let open: std::collections::BTreeSet<String> = src
        .iter()
        .filter(|e| e.0 .0 >= last_start)
        .filter_map(|e| get(e, "page"))
        .collect();
    assert_eq!(int(field(&i, "keys")), open.len() as i64, "{}", i.render());
    assert_eq!(
        int(field(&i, "open_windows")),
        open.len() as i64,
        "{}",
        i.render()
    );
    assert!(int(field(&i, "state_bytes")) > 0);
    let last = xrange_all(&mut c, "clicks").last().map_or(0, |e| e.0 .0);
    assert_eq!(int(field(&i, "watermark")), last as i64);
    assert_eq!(text(field(&i, "emit")), "final");
    // RESET forgets the state with the position: everything again (the
    // results already in the sink stay, so each window appears twice).
    let before = xrange_all(&mut c, "views").len();
    ok(&mut c, &["PIPELINE.RESET", "views"]);
    caught_up(&mut c, "views");
    assert_eq!(xrange_all(&mut c, "views").len(), 2 * before);
}

#[test]
fn late_entries_go_to_the_late_stream_and_revisions_within_lateness() {
    let dir = TempDir::new("pipe-windows-late").unwrap_or_else(|e| panic!("{e}"));
    let (mut s, mut c) = start(&dir, &[]);
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "w",
            "FROM",
            "0",
            "WATERMARK",
            "1s",
            "LATENESS",
            "5000",
            "LATE",
            "trades_late",
            "EMIT",
            "FINAL",
            "AS",
            "INSERT INTO vwap_1s SELECT symbol, window_start, vwap(price, volume) AS vwap, count(*) AS n \
             FROM trades GROUP BY symbol, TUMBLE(ts, INTERVAL '1' SECOND)",
        ],
    );
    let add = |c: &mut RespConn, ts: u64, price: &str, vol: &str| {
        let r = call_str(
            c,
            &[
                "XADD",
                "trades",
                "*",
                "symbol",
                "BTC",
                "ts",
                &ts.to_string(),
                "price",
                price,
                "volume",
                vol,
            ],
        );
        assert!(!r.is_error(), "{}", r.render());
    };
    add(&mut c, 100, "10", "1");
    add(&mut c, 900, "20", "1");
    add(&mut c, 2_100, "30", "1"); // watermark 1100: [0,1000) fires
    caught_up(&mut c, "w");
    add(&mut c, 500, "40", "2"); // late, within LATENESS: revision 1
    add(&mut c, 20_000, "50", "1"); // watermark 19000: [2000,3000) fires
    add(&mut c, 700, "60", "1"); // beyond LATENESS: the LATE stream
    caught_up(&mut c, "w");
    let out: Vec<String> = xrange_all(&mut c, "vwap_1s")
        .iter()
        .map(|e| {
            e.1.iter()
                .map(|(k, v)| format!("{}={}", st(k), st(v)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        out,
        [
            "symbol=BTC window_start=0 vwap=15 n=2",
            "symbol=BTC window_start=0 vwap=27.5 n=3 _rev=1",
            "symbol=BTC window_start=2000 vwap=30 n=1",
        ]
    );
    let late = xrange_all(&mut c, "trades_late");
    assert_eq!(late.len(), 1);
    assert_eq!(get(&late[0], "ts").as_deref(), Some("700"));
    assert!(get(&late[0], "_reason").is_some_and(|r| r.contains("late")));
    let i = info(&mut c, "w");
    assert_eq!(int(field(&i, "late_written")), 1, "{}", i.render());
    assert_eq!(int(field(&i, "lateness_ms")), 5000);
    assert_eq!(int(field(&i, "watermark_ms")), 1000);
    // The options survive a restart, and so does the state: the open
    // window [20000,21000) fires after it, and a late entry for it within
    // LATENESS is a revision of that result.
    let (s2, mut c) = restart(&mut s, &mut c, &dir, true, &[]);
    s = s2;
    add(&mut c, 22_100, "80", "1"); // watermark 21100: [20000,21000) fires
    add(&mut c, 20_500, "70", "3"); // late, within LATENESS: revision 1
    add(&mut c, 2_500, "90", "1"); // far beyond LATENESS: the LATE stream
    caught_up(&mut c, "w");
    let tail: Vec<_> = xrange_all(&mut c, "vwap_1s")
        .iter()
        .skip(3)
        .map(|e| {
            (
                get(e, "window_start"),
                get(e, "n"),
                get(e, "vwap"),
                get(e, "_rev"),
            )
        })
        .collect();
    let o = |x: &str| Some(x.to_string());
    assert_eq!(
        tail,
        [
            (o("20000"), o("1"), o("50"), None),
            (o("20000"), o("2"), o("65"), o("1")),
        ]
    );
    assert_eq!(xrange_all(&mut c, "trades_late").len(), 2);
    let x = call_str(&mut c, &["PIPELINE.EXPLAIN", "w"]);
    let x = st(x.text().unwrap_or_default());
    assert!(x.contains("Window TUMBLE(size 1000 ms) time ts"), "{x}");
    drop(s);
}

#[test]
fn time_options_are_checked() {
    let dir = TempDir::new("pipe-windows-opts").unwrap_or_else(|e| panic!("{e}"));
    let (_s, mut c) = start(&dir, &[]);
    let grouped = "INSERT INTO o SELECT count(*) AS n FROM src GROUP BY TUMBLE(_ms, 1000)";
    let e = err(
        &mut c,
        &["PIPELINE.CREATE", "p", "WATERMARK", "soon", "AS", grouped],
    );
    assert!(e.contains("WATERMARK must be a duration"), "{e}");
    let e = err(
        &mut c,
        &["PIPELINE.CREATE", "p", "EMIT", "SOMETIMES", "AS", grouped],
    );
    assert!(e.contains("EMIT takes FINAL or UPDATES"), "{e}");
    let e = err(
        &mut c,
        &["PIPELINE.CREATE", "p", "IDLE", "0", "AS", grouped],
    );
    assert!(e.contains("IDLE"), "{e}");
    let e = err(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "p",
            "LATENESS",
            "5s",
            "AS",
            "INSERT INTO o SELECT * FROM src",
        ],
    );
    assert!(e.contains("grouped"), "{e}");
    let e = err(
        &mut c,
        &["PIPELINE.CREATE", "p", "LATE", "src", "AS", grouped],
    );
    assert!(e.contains("LATE stream"), "{e}");
    ok(&mut c, &["SET", "str", "x"]);
    let e = err(
        &mut c,
        &["PIPELINE.CREATE", "p", "LATE", "str", "AS", grouped],
    );
    assert!(e.starts_with("WRONGTYPE"), "{e}");
    let e = err(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "p",
            "AS",
            "INSERT INTO o SELECT x, count(*) AS n FROM src GROUP BY y",
        ],
    );
    assert!(e.contains("must appear in GROUP BY"), "{e}");
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "p",
            "STATE_LIMIT",
            "1000000",
            "AS",
            grouped,
        ],
    );
    let i = info(&mut c, "p");
    assert_eq!(int(field(&i, "state_limit")), 1_000_000);
    // REPLACE keeps the position, so the state must fit the new statement.
    let other = "INSERT INTO o SELECT count(*) AS n FROM src GROUP BY TUMBLE(_ms, 2000)";
    let e = err(&mut c, &["PIPELINE.CREATE", "p", "REPLACE", "AS", other]);
    assert!(e.contains("FROM"), "{e}");
    let e = err(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "p",
            "REPLACE",
            "WATERMARK",
            "5",
            "AS",
            grouped,
        ],
    );
    assert!(e.contains("FROM"), "{e}");
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "p",
            "REPLACE",
            "STATE_LIMIT",
            "1000000",
            "COMMIT_INTERVAL",
            "5",
            "AS",
            grouped,
        ],
    );
    ok(
        &mut c,
        &["PIPELINE.CREATE", "p", "REPLACE", "FROM", "0", "AS", other],
    );
}

fn hgetall(c: &mut RespConn, key: &str) -> BTreeMap<String, String> {
    let r = call_str(c, &["HGETALL", key]);
    let items: Vec<String> = common::state::items(&r).iter().map(text).collect();
    items
        .chunks(2)
        .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
        .collect()
}

#[test]
fn hash_sink_keeps_the_latest_result_per_key() {
    let dir = TempDir::new("pipe-windows-hash").unwrap_or_else(|e| panic!("{e}"));
    let (mut s, mut c) = start(&dir, &[]);
    // The latest price per symbol, for a dashboard (a running aggregate).
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "latest",
            "FROM",
            "0",
            "AS",
            "INSERT INTO HASH latest TTL 1h SELECT symbol, last(price) AS price, count(*) AS trades \
             FROM trades GROUP BY symbol",
        ],
    );
    // 1-second candles per symbol into hashes candle:<symbol>.
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "candles",
            "FROM",
            "0",
            "AS",
            "INSERT INTO HASH \"candle\" SELECT symbol, window_start, first(price) AS open, \
             max(price) AS high, min(price) AS low, last(price) AS close \
             FROM trades GROUP BY symbol, TUMBLE(_ms, INTERVAL '1' SECOND)",
        ],
    );
    for (id, sym, price) in [
        ("1000-1", "BTC", "100"),
        ("1200-1", "ETH", "10"),
        ("1500-1", "BTC", "103"),
        ("1700-1", "BTC", "99"),
        ("2100-1", "BTC", "101"),
        ("2200-1", "ETH", "11"),
    ] {
        let r = call_str(
            &mut c,
            &["XADD", "trades", id, "symbol", sym, "price", price],
        );
        assert!(!r.is_error(), "{}", r.render());
    }
    caught_up(&mut c, "latest");
    caught_up(&mut c, "candles");
    let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        hgetall(&mut c, "latest:BTC"),
        m(&[("symbol", "BTC"), ("price", "101"), ("trades", "4")])
    );
    assert_eq!(
        hgetall(&mut c, "latest:ETH"),
        m(&[("symbol", "ETH"), ("price", "11"), ("trades", "2")])
    );
    let ttl = int(&call_str(&mut c, &["PTTL", "latest:BTC"]));
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "PTTL {ttl}");
    // Only [1000,2000) closed (the watermark is 2200).
    assert_eq!(
        hgetall(&mut c, "candle:BTC"),
        m(&[
            ("symbol", "BTC"),
            ("window_start", "1000"),
            ("open", "100"),
            ("high", "103"),
            ("low", "99"),
            ("close", "99")
        ])
    );
    assert_eq!(int(&call_str(&mut c, &["PTTL", "candle:BTC"])), -1);
    assert_eq!(int(&call_str(&mut c, &["EXISTS", "candle"])), 0);
    let i = info(&mut c, "latest");
    assert_eq!(text(field(&i, "sink")), "HASH latest TTL 3600000");
    // After a SIGKILL the hashes and the state are still there: the next
    // window replaces the candle.
    let (s2, mut c) = restart(&mut s, &mut c, &dir, true, &[]);
    s = s2;
    let r = call_str(
        &mut c,
        &["XADD", "trades", "3000-1", "symbol", "BTC", "price", "120"],
    );
    assert!(!r.is_error(), "{}", r.render());
    caught_up(&mut c, "latest");
    caught_up(&mut c, "candles");
    assert_eq!(
        hgetall(&mut c, "candle:BTC"),
        m(&[
            ("symbol", "BTC"),
            ("window_start", "2000"),
            ("open", "101"),
            ("high", "101"),
            ("low", "101"),
            ("close", "101")
        ])
    );
    assert_eq!(
        hgetall(&mut c, "latest:BTC")
            .get("trades")
            .map(String::as_str),
        Some("5")
    );
    // A key of another type fails the pipeline with a clear error.
    ok(&mut c, &["SET", "latest:SOL", "x"]);
    let r = call_str(
        &mut c,
        &["XADD", "trades", "3001-1", "symbol", "SOL", "price", "1"],
    );
    assert!(!r.is_error(), "{}", r.render());
    let deadline = Instant::now() + WAIT;
    loop {
        let i = info(&mut c, "latest");
        if text(field(&i, "state")) == "failed" {
            let e = text(field(&i, "error"));
            assert!(e.contains("latest:SOL") && e.contains("not a hash"), "{e}");
            break;
        }
        assert!(Instant::now() < deadline, "{}", i.render());
        std::thread::sleep(Duration::from_millis(2));
    }
    // What the statement must have.
    let e = err(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "h",
            "AS",
            "INSERT INTO HASH h SELECT symbol FROM trades",
        ],
    );
    assert!(e.contains("GROUP BY"), "{e}");
    let e = err(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "h",
            "SINK_MAXLEN",
            "10",
            "AS",
            "INSERT INTO HASH h SELECT symbol, count(*) AS n FROM trades GROUP BY symbol",
        ],
    );
    assert!(e.contains("SINK_MAXLEN"), "{e}");
    let e = err(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "h",
            "AS",
            "INSERT INTO HASH h TTL soon SELECT symbol, count(*) AS n FROM trades GROUP BY symbol",
        ],
    );
    assert!(e.contains("TTL"), "{e}");
    drop(s);
}

#[test]
fn emit_updates_and_idle_through_the_server() {
    let dir = TempDir::new("pipe-windows-emit").unwrap_or_else(|e| panic!("{e}"));
    let (mut s, mut c) = start(&dir, &[]);
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "u",
            "FROM",
            "0",
            "EMIT",
            "UPDATES",
            "AS",
            "INSERT INTO upd SELECT k, window_start, count(*) AS n FROM ev \
             GROUP BY k, TUMBLE(ts, INTERVAL '1' MINUTE)",
        ],
    );
    let add = |c: &mut RespConn, ts: u64| {
        let r = call_str(c, &["XADD", "ev", "*", "k", "a", "ts", &ts.to_string()]);
        assert!(!r.is_error(), "{}", r.render());
    };
    let seen = |c: &mut RespConn| -> Vec<(String, String)> {
        xrange_all(c, "upd")
            .iter()
            .map(|e| {
                (
                    get(e, "window_start").unwrap_or_default(),
                    get(e, "n").unwrap_or_default(),
                )
            })
            .collect()
    };
    let p = |a: &str, b: &str| (a.to_string(), b.to_string());
    add(&mut c, 1_000);
    caught_up(&mut c, "u");
    assert_eq!(seen(&mut c), [p("0", "1")]);
    add(&mut c, 2_000);
    caught_up(&mut c, "u");
    assert_eq!(seen(&mut c), [p("0", "1"), p("0", "2")]);
    // The window closes with nothing new since its last update: no
    // repeat; the next window starts updating.
    add(&mut c, 61_000);
    caught_up(&mut c, "u");
    assert_eq!(seen(&mut c), [p("0", "1"), p("0", "2"), p("60000", "1")]);
    let i = info(&mut c, "u");
    assert_eq!(text(field(&i, "emit")), "updates every 0");
    // The options survive a restart.
    let (s2, mut c) = restart(&mut s, &mut c, &dir, true, &[]);
    s = s2;
    assert_eq!(text(field(&info(&mut c, "u"), "emit")), "updates every 0");

    // IDLE: the source goes quiet and the last window still closes, by
    // the clock (event time is the entry IDs' wall-clock time here).
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "idle",
            "FROM",
            "0",
            "IDLE",
            "200ms",
            "AS",
            "INSERT INTO idle_out SELECT k, window_start, count(*) AS n FROM live \
             GROUP BY k, TUMBLE(_ms, 100)",
        ],
    );
    let r = call_str(&mut c, &["XADD", "live", "*", "k", "a"]);
    assert!(!r.is_error(), "{}", r.render());
    let deadline = Instant::now() + WAIT;
    loop {
        let out = xrange_all(&mut c, "idle_out");
        if !out.is_empty() {
            assert_eq!(out.len(), 1);
            assert_eq!(get(&out[0], "n").as_deref(), Some("1"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the window never closed: {}",
            info(&mut c, "idle").render()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(int(field(&info(&mut c, "idle"), "idle_ms")), 200);
    drop(s);
}

#[test]
fn state_limits_fail_the_pipeline_with_a_clear_error() {
    let dir = TempDir::new("pipe-windows-limits").unwrap_or_else(|e| panic!("{e}"));
    let (_s, mut c) = start(&dir, &[]);
    for i in 0..300 {
        let r = call_str(&mut c, &["XADD", "many", "*", "k", &format!("key{i}")]);
        assert!(!r.is_error(), "{}", r.render());
    }
    let sql = "INSERT INTO o SELECT k, count(*) AS n FROM many GROUP BY k";
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "small",
            "FROM",
            "0",
            "STATE_LIMIT",
            "2000",
            "AS",
            sql,
        ],
    );
    let e = failed_with(&mut c, "small");
    assert!(e.contains("exceeds STATE_LIMIT"), "{e}");
    // The server-wide cap, for pipelines without STATE_LIMIT.
    ok(&mut c, &["CONFIG", "SET", "pipeline-max-state", "4kb"]);
    let r = call_str(&mut c, &["CONFIG", "GET", "pipeline-max-state"]);
    assert_eq!(text(&common::state::items(&r)[1]), "4096");
    ok(
        &mut c,
        &["PIPELINE.CREATE", "capped", "FROM", "0", "AS", sql],
    );
    let e = failed_with(&mut c, "capped");
    assert!(e.contains("exceeds pipeline-max-state"), "{e}");
    // Raised again, RESUME goes on from the position it kept.
    ok(&mut c, &["CONFIG", "SET", "pipeline-max-state", "256mb"]);
    ok(&mut c, &["PIPELINE.RESUME", "capped"]);
    caught_up(&mut c, "capped");
    assert_eq!(int(field(&info(&mut c, "capped"), "keys")), 300);
}

#[test]
fn count_windows_and_the_other_aggregates_through_the_server() {
    let dir = TempDir::new("pipe-windows-aggs").unwrap_or_else(|e| panic!("{e}"));
    let (_s, mut c) = start(&dir, &[]);
    // Every 3 trades of a symbol, sliding by 2.
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "cw",
            "FROM",
            "0",
            "AS",
            "INSERT INTO cw_out SELECT symbol, window_start, window_end, count(*) AS n, \
             count(DISTINCT venue) AS venues, median(price) AS med, \
             percentile_cont(0.25) WITHIN GROUP (ORDER BY price) AS p25, \
             stddev_pop(price) AS sd FROM t GROUP BY symbol, COUNT_WINDOW(3, 2)",
        ],
    );
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "tw",
            "FROM",
            "0",
            "AS",
            "INSERT INTO tw_out SELECT symbol, window_start, twap(price) AS twap \
             FROM t GROUP BY symbol, TUMBLE(_ms, 1000)",
        ],
    );
    for (id, venue, price) in [
        ("1000-1", "X", "10"),
        ("1250-1", "Y", "20"),
        ("1500-1", "X", "40"),
        ("1750-1", "Z", "30"),
        ("2000-1", "X", "50"),
        ("3000-1", "X", "60"),
    ] {
        let r = call_str(
            &mut c,
            &[
                "XADD", "t", id, "symbol", "BTC", "venue", venue, "price", price,
            ],
        );
        assert!(!r.is_error(), "{}", r.render());
    }
    caught_up(&mut c, "cw");
    caught_up(&mut c, "tw");
    let rows = |c: &mut RespConn, k: &str| -> Vec<String> {
        xrange_all(c, k)
            .iter()
            .map(|e| {
                e.1.iter()
                    .map(|(k, v)| format!("{}={}", st(k), st(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    // Windows of entries 1-3 and 3-5: prices 10 20 40 and 40 30 50.
    assert_eq!(
        rows(&mut c, "cw_out"),
        [
            "symbol=BTC window_start=1000 window_end=1501 n=3 venues=2 med=20 p25=15 sd=12.472191289246473",
            "symbol=BTC window_start=1500 window_end=2001 n=3 venues=2 med=40 p25=35 sd=8.16496580927726",
        ]
    );
    // [1000,2000): 10 for 250 ms, 20 for 250, 40 for 250, 30 for 250.
    // [2000,3000): 50 from the start (its first entry is at 2000).
    assert_eq!(
        rows(&mut c, "tw_out"),
        [
            "symbol=BTC window_start=1000 twap=25",
            "symbol=BTC window_start=2000 twap=50",
        ]
    );
}
