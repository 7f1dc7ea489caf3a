//! Windows and aggregates: exact results of small cases, each aggregate's
//! edge cases (NULLs, one element, equal timestamps, zero volume), what
//! the compiler refuses, and EXPLAIN.

use ferrite_pipeline::{Entry, EntryId, FlatRecords, Plan, PlanError, Record, WindowOptions};

type Ev<'a> = (u64, &'a [(&'a str, &'a str)]);

fn lines(out: &[Record]) -> Vec<String> {
    out.iter()
        .map(|r| {
            r.fields
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(k),
                        String::from_utf8_lossy(v)
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Runs `evs` (entry ms, fields) one batch each; the results of all.
fn run(sql: &str, opts: &WindowOptions, evs: &[Ev<'_>]) -> Vec<String> {
    let mut plan = Plan::compile_with(sql, opts).expect("compiles");
    let mut out = Vec::new();
    for (i, (ms, f)) in evs.iter().enumerate() {
        let e = [Entry::new(EntryId::new(*ms, i as u64), f)];
        let st = plan.process_batch(&e, &mut out);
        assert_eq!(st.failed, 0, "{:?}", st.first_error);
    }
    lines(&out)
}

fn tumble(aggs: &str) -> String {
    format!("INSERT INTO o SELECT window_start, {aggs} FROM s GROUP BY TUMBLE(_ms, 1000)")
}

/// The single result of one window holding `evs` (at ms 0..999), closed by
/// an event at 5000.
fn one_window(aggs: &str, evs: &[Ev<'_>]) -> String {
    let mut all = evs.to_vec();
    all.push((5000, &[]));
    let out = run(&tumble(aggs), &WindowOptions::default(), &all);
    assert_eq!(out.len(), 1, "{out:?}");
    out[0].clone()
}

#[test]
fn tumbling_page_views_per_minute() {
    let sql = "INSERT INTO views SELECT page, window_start, window_end, count(*) AS views \
               FROM clicks GROUP BY page, TUMBLE(_ms, INTERVAL '1' MINUTE)";
    let out = run(
        sql,
        &WindowOptions::default(),
        &[
            (1_000, &[("page", "/a")]),
            (2_000, &[("page", "/b")]),
            (59_999, &[("page", "/a")]),
            (60_000, &[("page", "/a")]),
            (130_000, &[("page", "/b")]),
        ],
    );
    assert_eq!(
        out,
        vec![
            "page=/a window_start=0 window_end=60000 views=2",
            "page=/b window_start=0 window_end=60000 views=1",
            "page=/a window_start=60000 window_end=120000 views=1",
        ]
    );
}

#[test]
fn watermark_delays_and_lateness_revises() {
    let opts = WindowOptions {
        watermark_ms: 500,
        lateness_ms: 1000,
        ..Default::default()
    };
    let sql = "INSERT INTO o SELECT window_start, count(*) AS n, sum(v) AS s FROM t GROUP BY TUMBLE(_ms, 1000)";
    let out = run(
        sql,
        &opts,
        &[
            (100, &[("v", "1")]),
            (1_200, &[("v", "2")]), // wm 700: [0,1000) still open
            (1_500, &[("v", "3")]), // wm 1000: [0,1000) fires
            (900, &[("v", "10")]),  // late, within lateness: revision 1
            (2_600, &[("v", "4")]), // wm 2100: [1000,2000) fires; [0,1000) kept until 2000 passed
            (950, &[("v", "20")]),  // wm 2100 >= 1000 + 1000: too late, dropped
        ],
    );
    assert_eq!(
        out,
        vec![
            "window_start=0 n=1 s=1",
            "window_start=0 n=2 s=11 _rev=1",
            "window_start=1000 n=2 s=5",
        ]
    );
}

#[test]
fn event_time_from_a_field_and_having() {
    let sql = "INSERT INTO o SELECT k, window_end, max(x) AS m FROM t \
               GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND) HAVING count(*) >= 2";
    let out = run(
        sql,
        &WindowOptions::default(),
        &[
            (1, &[("k", "a"), ("ts", "1000"), ("x", "5")]),
            (2, &[("k", "a"), ("ts", "2000"), ("x", "7")]),
            (3, &[("k", "b"), ("ts", "3000"), ("x", "9")]),
            (4, &[("k", "b"), ("ts", "20000"), ("x", "1")]),
        ],
    );
    assert_eq!(out, vec!["k=a window_end=10000 m=7"]);
}

#[test]
fn hop_panes_and_session_merges() {
    let hop =
        "INSERT INTO o SELECT window_start, count(*) AS n FROM t GROUP BY HOP(_ms, 500, 1000)";
    let out = run(
        hop,
        &WindowOptions::default(),
        &[(100, &[]), (600, &[]), (700, &[]), (3000, &[])],
    );
    assert_eq!(
        out,
        vec![
            "window_start=-500 n=1",
            "window_start=0 n=3",
            "window_start=500 n=2"
        ]
    );
    let sess = "INSERT INTO o SELECT k, window_start, window_end, count(*) AS n FROM t GROUP BY k, SESSION(_ms, 100)";
    let out = run(
        sess,
        &WindowOptions::default(),
        &[
            (0, &[("k", "a")]),
            (250, &[("k", "a")]),
            // [120,220) would bridge nothing, and its end is behind the
            // watermark (250): too late without LATENESS, dropped.
            (120, &[("k", "a")]),
            (1000, &[("k", "a")]),
        ],
    );
    assert_eq!(
        out,
        vec![
            "k=a window_start=0 window_end=100 n=1",
            "k=a window_start=250 window_end=350 n=1",
        ]
    );
}

#[test]
fn running_aggregate_without_window_emits_updates() {
    let sql = "INSERT INTO o SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k";
    let out = run(
        sql,
        &WindowOptions::default(),
        &[
            (1, &[("k", "a"), ("v", "1")]),
            (2, &[("k", "b"), ("v", "2")]),
            (3, &[("k", "a"), ("v", "3")]),
        ],
    );
    assert_eq!(out, vec!["k=a n=1 s=1", "k=b n=1 s=2", "k=a n=2 s=4"]);
    let sql = "INSERT INTO o SELECT count(*) AS n FROM t";
    let out = run(sql, &WindowOptions::default(), &[(1, &[]), (2, &[])]);
    assert_eq!(out, vec!["n=1", "n=2"]);
}

#[test]
fn aggregates_skip_nulls_as_postgres() {
    let none: &[Ev<'_>] = &[(1, &[("x", "")]), (2, &[("y", "1")])];
    assert_eq!(
        one_window(
            "count(*) AS c, count(x) AS cx, sum(x) AS s, avg(x) AS a, min(x) AS lo, max(x) AS hi, first(x) AS f, last(x) AS l, stddev(x) AS sd, var_pop(x) AS vp",
            none
        ),
        // count(x) counts the present (empty) field; the numeric ones see NULL.
        "window_start=0 c=2 cx=1"
    );
}

#[test]
fn aggregates_of_one_element() {
    let one: &[Ev<'_>] = &[(7, &[("x", "4"), ("v", "2")])];
    assert_eq!(
        one_window(
            "sum(x) AS s, avg(x) AS a, min(x) AS lo, max(x) AS hi, first(x) AS f, last(x) AS l, stddev_samp(x) AS sd, stddev_pop(x) AS sp, var_samp(x) AS vs, vwap(x, v) AS w",
            one
        ),
        "window_start=0 s=4 a=4 lo=4 hi=4 f=4 l=4 sp=0 w=4"
    );
}

#[test]
fn first_and_last_break_time_ties_by_entry_id() {
    // Equal event times (a field), entries in ID order 1, 2, 3.
    let evs: &[Ev<'_>] = &[
        (1, &[("ts", "500"), ("x", "10")]),
        (2, &[("ts", "500"), ("x", "20")]),
        (3, &[("ts", "400"), ("x", "30")]),
        (4, &[("ts", "5000")]),
    ];
    let sql = "INSERT INTO o SELECT first(x) AS f, last(x) AS l FROM s GROUP BY TUMBLE(ts, 1000)";
    assert_eq!(run(sql, &WindowOptions::default(), evs), vec!["f=30 l=20"]);
}

#[test]
fn vwap_with_zero_volume_is_null() {
    let evs: &[Ev<'_>] = &[
        (1, &[("p", "10"), ("v", "0")]),
        (2, &[("p", "12"), ("v", "0")]),
    ];
    assert_eq!(
        one_window("vwap(p, v) AS w, count(*) AS n", evs),
        "window_start=0 n=2"
    );
    let evs: &[Ev<'_>] = &[
        (1, &[("p", "10"), ("v", "1")]),
        (2, &[("p", "13"), ("v", "2")]),
        (3, &[("p", "99")]),
    ];
    assert_eq!(one_window("vwap(p, v) AS w", evs), "window_start=0 w=12");
}

#[test]
fn variance_matches_the_textbook() {
    let evs: &[Ev<'_>] = &[
        (1, &[("x", "2")]),
        (2, &[("x", "4")]),
        (3, &[("x", "4")]),
        (4, &[("x", "4")]),
        (5, &[("x", "5")]),
        (6, &[("x", "5")]),
        (7, &[("x", "7")]),
        (8, &[("x", "9")]),
    ];
    assert_eq!(
        one_window(
            "var_pop(x) AS vp, stddev_pop(x) AS sp, var_samp(x) AS vs",
            evs
        ),
        "window_start=0 vp=4 sp=2 vs=4.571428571428571"
    );
}

#[test]
fn sum_of_integers_stays_integer_and_doubles_make_it_double() {
    let evs: &[Ev<'_>] = &[(1, &[("x", "1")]), (2, &[("x", "2.5")])];
    assert_eq!(one_window("sum(x) AS s", evs), "window_start=0 s=3.5");
    let evs: &[Ev<'_>] = &[(1, &[("x", "9223372036854775807")]), (2, &[("x", "1")])];
    // Past i64 the sum goes on as a double.
    assert_eq!(
        one_window("sum(x) AS s", evs),
        "window_start=0 s=9.223372036854776e18"
    );
}

#[test]
fn expressions_over_aggregates_and_keys() {
    let sql = "INSERT INTO o SELECT upper(k) AS key, round(sum(v) * 1.0 / count(*), 2) AS mean, \
               CASE WHEN max(v) > 5 THEN 'big' ELSE 'small' END AS size \
               FROM t GROUP BY k, TUMBLE(_ms, 100)";
    let out = run(
        sql,
        &WindowOptions::default(),
        &[
            (1, &[("k", "a"), ("v", "1")]),
            (2, &[("k", "a"), ("v", "9")]),
            (3, &[("k", "a"), ("v", "1")]),
            (500, &[("k", "z")]),
        ],
    );
    assert_eq!(out, vec!["key=A mean=3.67 size=big"]);
}

#[test]
fn bad_event_times_fail_the_event_only() {
    let mut plan =
        Plan::compile("INSERT INTO o SELECT count(*) AS n FROM t GROUP BY TUMBLE(ts, 10)")
            .expect("compiles");
    let evs: [&[(&str, &str)]; 3] = [&[("ts", "x")], &[("ts", "-5")], &[("ts", "1.5")]];
    let entries: Vec<_> = evs
        .iter()
        .enumerate()
        .map(|(i, f)| Entry::new(EntryId::new(i as u64, 0), f))
        .collect();
    let st = plan.process_batch(&entries, &mut Vec::new());
    assert_eq!(st.failed, 3);
}

#[test]
fn state_limit_fails_the_plan() {
    let opts = WindowOptions {
        state_limit: 10_000,
        ..Default::default()
    };
    let mut plan = Plan::compile_with(
        "INSERT INTO o SELECT k, count(*) AS n FROM t GROUP BY k, TUMBLE(_ms, 1000)",
        &opts,
    )
    .expect("compiles");
    let keys: Vec<String> = (0..1000).map(|i| format!("key{i}")).collect();
    let rows: Vec<Vec<(&str, &str)>> = keys.iter().map(|k| vec![("k", k.as_str())]).collect();
    let entries: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, f)| Entry::new(EntryId::new(1, i as u64), f))
        .collect();
    plan.process_batch(&entries, &mut Vec::new());
    let msg = plan.fatal().expect("over the limit");
    assert!(msg.contains("STATE_LIMIT"), "{msg}");
}

#[test]
fn compact_state_per_key_and_window() {
    let mut plan = Plan::compile(
        "INSERT INTO o SELECT k, count(*) AS n, sum(v) AS s, vwap(p, v) AS w FROM t GROUP BY k, TUMBLE(_ms, 60000)",
    )
    .expect("compiles");
    let keys: Vec<String> = (0..10_000).map(|i| format!("SYM{i}")).collect();
    let rows: Vec<Vec<(&str, &str)>> = keys
        .iter()
        .map(|k| vec![("k", k.as_str()), ("p", "10.5"), ("v", "3")])
        .collect();
    let entries: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, f)| Entry::new(EntryId::new(1, i as u64), f))
        .collect();
    plan.process_batch(&entries, &mut Vec::new());
    let st = plan.window_stats().expect("windowed");
    assert_eq!((st.keys, st.open_windows), (10_000, 10_000));
    let per = st.state_bytes / st.open_windows;
    assert!(per <= 131, "{per} bytes per key and window");
}

fn err(sql: &str) -> PlanError {
    Plan::compile(sql).expect_err(sql)
}

#[test]
fn refusals_name_the_reason() {
    use PlanError::*;
    type Check = fn(&PlanError) -> bool;
    let cases: &[(&str, Check)] = &[
        ("INSERT INTO o SELECT x, count(*) AS n FROM s GROUP BY y", |e| matches!(e, Invalid(_))),
        ("INSERT INTO o SELECT * FROM s GROUP BY x", |e| matches!(e, Unsupported(_))),
        ("INSERT INTO o SELECT sum(DISTINCT x) AS n FROM s", |e| matches!(e, Unsupported(_))),
        ("INSERT INTO o SELECT twap(x) AS n FROM s GROUP BY k", |e| matches!(e, Invalid(_))),
        ("INSERT INTO o SELECT percentile_cont(1.5) WITHIN GROUP (ORDER BY x) AS n FROM s", |e| matches!(e, Invalid(_))),
        ("INSERT INTO o SELECT percentile_cont(0.5) AS n FROM s", |e| matches!(e, Invalid(_))),
        ("INSERT INTO o SELECT percentile(x, y) AS n FROM s", |e| matches!(e, Invalid(_))),
        ("INSERT INTO o SELECT max(x) WITHIN GROUP (ORDER BY x) AS n FROM s", |e| matches!(e, Unsupported(_))),
        ("INSERT INTO o SELECT sum(sum(x)) AS n FROM s", |e| matches!(e, Invalid(_))),
        ("INSERT INTO o SELECT count(*) AS n FROM s GROUP BY TUMBLE(_ms, 0)", |e| matches!(e, Invalid(_))),
        ("INSERT INTO o SELECT count(*) AS n FROM s GROUP BY TUMBLE(_ms, INTERVAL '1' YEAR)", |e| matches!(e, Invalid(_))),
        ("INSERT INTO o SELECT count(*) AS n FROM s GROUP BY HOP(_ms, 1000)", |e| matches!(e, WrongArity { .. })),
        ("INSERT INTO o SELECT count(*) AS n FROM s GROUP BY TUMBLE(_ms, 10), SESSION(_ms, 5)", |e| matches!(e, Unsupported(_))),
        ("INSERT INTO o SELECT window_start, count(*) AS n FROM s GROUP BY k", |e| matches!(e, Invalid(_))),
        ("INSERT INTO o SELECT TUMBLE(_ms, 10) AS w, count(*) AS n FROM s GROUP BY TUMBLE(_ms, 10)", |e| matches!(e, Unsupported(_))),
        ("INSERT INTO o SELECT nope(k) AS n FROM s GROUP BY k", |e| matches!(e, UnknownFunction(_))),
        ("INSERT INTO o SELECT vwap(x) AS n FROM s", |e| matches!(e, WrongArity { .. })),
        ("INSERT INTO o SELECT k FROM s WHERE count(*) > 1 GROUP BY k", |e| matches!(e, WindowsAndAggregates)),
        ("INSERT INTO o SELECT count(*) + 1 FROM s", |e| matches!(e, NeedsAlias(_))),
        ("INSERT INTO o SELECT count(*) AS _rev FROM s", |e| matches!(e, Invalid(_))),
        ("INSERT INTO o SELECT sum(x) OVER () AS c FROM s", |e| matches!(e, WindowsAndAggregates)),
    ];
    for (sql, ok) in cases {
        let e = err(sql);
        assert!(ok(&e), "{sql}: {e:?}");
    }
    // Time options need a window; LATE must be another stream.
    let late = WindowOptions {
        late_stream: Some("s".into()),
        ..Default::default()
    };
    assert!(matches!(
        Plan::compile_with(
            "INSERT INTO o SELECT count(*) AS n FROM s GROUP BY TUMBLE(_ms, 10)",
            &late
        ),
        Err(Invalid(_))
    ));
    let wm = WindowOptions {
        watermark_ms: 5,
        ..Default::default()
    };
    assert!(matches!(
        Plan::compile_with("INSERT INTO o SELECT * FROM s", &wm),
        Err(Invalid(_))
    ));
    assert!(matches!(
        Plan::compile_with(
            "INSERT INTO o SELECT k, count(*) AS n FROM s GROUP BY k",
            &wm
        ),
        Err(Invalid(_))
    ));
}

#[test]
fn explain_shows_the_window_plan() {
    let opts = WindowOptions {
        watermark_ms: 2000,
        lateness_ms: 5000,
        late_stream: Some("trades_late".into()),
        ..Default::default()
    };
    let plan = Plan::compile_with(
        "INSERT INTO vwap_1m SELECT symbol, window_start, window_end, vwap(price, volume) AS vwap, \
         sum(volume) AS volume, first(price) AS open, max(price) AS high, min(price) AS low, \
         last(price) AS close, count(*) AS trades FROM trades GROUP BY symbol, TUMBLE(ts, INTERVAL '1' MINUTE)",
        &opts,
    )
    .expect("compiles");
    let x = plan.explain();
    assert!(
        x.contains("Window TUMBLE(size 60000 ms) time ts keys [symbol]"),
        "{x}"
    );
    assert!(
        x.contains("watermark 2000 ms lateness 5000 ms emit final late -> trades_late"),
        "{x}"
    );
    assert_eq!(plan.late_stream(), Some("trades_late"));
    assert!(plan.is_stateful());
}

#[test]
fn corrupt_state_is_an_error_not_a_panic() {
    let sql = "INSERT INTO o SELECT k, count(*) AS n FROM t GROUP BY k, SESSION(_ms, 10)";
    let mut plan = Plan::compile(sql).expect("compiles");
    let rows: [&[(&str, &str)]; 2] = [&[("k", "a")], &[("k", "b")]];
    let entries: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, f)| Entry::new(EntryId::new(i as u64, 0), f))
        .collect();
    plan.process_batch(&entries, &mut Vec::new());
    let snap = plan.snapshot();
    for cut in 0..snap.len() {
        let mut p = Plan::compile(sql).expect("compiles");
        assert!(p.restore(&snap[..cut]).is_err() || cut == 0 && snap.is_empty());
    }
    let mut bytes = snap.clone();
    for i in 0..bytes.len() {
        let mut p = Plan::compile(sql).expect("compiles");
        bytes[i] ^= 0xff;
        let _ = p.restore(&bytes);
        bytes[i] ^= 0xff;
    }
    let mut p = Plan::compile(sql).expect("compiles");
    p.restore(&snap).expect("restores");
}

/// A wall-clock time and an entry (`None`: a tick).
type Step<'a> = (i64, Option<Ev<'a>>);

/// Feeds the steps, each in its own epoch, through a snapshot and restore.
fn run_clocked(sql: &str, opts: &WindowOptions, steps: &[Step<'_>]) -> Vec<String> {
    let mut plan = Plan::compile_with(sql, opts).expect("compiles");
    let mut out = Vec::new();
    for (i, (now, ev)) in steps.iter().enumerate() {
        plan.set_clock(*now);
        plan.begin_epoch();
        match ev {
            Some((ms, f)) => {
                let e = [Entry::new(EntryId::new(*ms, i as u64), f)];
                let st = plan.process_batch(&e, &mut out);
                assert_eq!(st.failed, 0, "{:?}", st.first_error);
            }
            None => plan.tick(&mut out),
        }
        let delta = plan.epoch_delta().expect("in an epoch");
        plan.end_epoch();
        // The state goes through its checkpoint form and its delta.
        let snap = plan.snapshot();
        let mut again = Plan::compile_with(sql, opts).expect("compiles");
        again.restore(&snap).expect("restores");
        assert_eq!(again.snapshot(), snap);
        assert!(!delta.is_empty());
        plan = again;
        plan.set_clock(*now);
    }
    lines(&out)
}

#[test]
fn emit_updates_throttles_and_skips_an_unchanged_final() {
    let opts = WindowOptions {
        emit: ferrite_pipeline::Emit::Updates { every_ms: 100 },
        ..Default::default()
    };
    let sql = "INSERT INTO o SELECT window_start, count(*) AS n FROM t GROUP BY TUMBLE(_ms, 1000)";
    let out = run_clocked(
        sql,
        &opts,
        &[
            (0, Some((10, &[]))),   // first flush: n=1
            (50, Some((20, &[]))),  // within EVERY: held
            (60, None),             // still held
            (100, None),            // due: n=2
            (150, None),            // nothing changed
            (160, Some((30, &[]))), // due (last flush 100): n=3
            // [0,1000) closes unchanged since n=3: no final; [1000,2000)
            // opens, its update held until 260.
            (170, Some((1500, &[]))),
            (400, Some((1600, &[]))), // due: n=2
            (410, Some((1700, &[]))), // held
            // Closes [1000,2000), changed since its last update: final n=3.
            // [2000,3000)'s update is held until 500.
            (420, Some((2500, &[]))),
        ],
    );
    assert_eq!(
        out,
        vec![
            "window_start=0 n=1",
            "window_start=0 n=2",
            "window_start=0 n=3",
            "window_start=1000 n=2",
            "window_start=1000 n=3",
        ]
    );
}

#[test]
fn emit_updates_for_running_aggregates() {
    let opts = WindowOptions {
        emit: ferrite_pipeline::Emit::Updates { every_ms: 1000 },
        ..Default::default()
    };
    let sql = "INSERT INTO o SELECT k, count(*) AS n FROM t GROUP BY k";
    let out = run_clocked(
        sql,
        &opts,
        &[
            (0, Some((1, &[("k", "a")]))),
            (10, Some((2, &[("k", "a")]))),
            (20, Some((3, &[("k", "b")]))),
            (999, None),
            (1000, None),
        ],
    );
    assert_eq!(out, vec!["k=a n=1", "k=a n=2", "k=b n=1"]);
}

#[test]
fn idle_advances_the_watermark_with_the_clock() {
    let opts = WindowOptions {
        watermark_ms: 100,
        idle_ms: 5000,
        ..Default::default()
    };
    let sql =
        "INSERT INTO o SELECT k, window_start, count(*) AS n FROM t GROUP BY k, TUMBLE(_ms, 1000)";
    let mut plan = Plan::compile_with(sql, &opts).expect("compiles");
    let mut out = Vec::new();
    plan.set_clock(1_000_000);
    let f: &[(&str, &str)] = &[("k", "a")];
    plan.process_batch(&[Entry::new(EntryId::new(500, 0), &f)], &mut out);
    assert!(out.is_empty());
    // The watermark (400) must reach 1000: idle from 1_005_000, and
    // 400 + (T - 1_000_000) >= 1000 at T = 1_000_600, so 1_005_000.
    assert_eq!(plan.next_tick_ms(), Some(1_005_000));
    plan.set_clock(1_004_999);
    plan.tick(&mut out);
    assert!(out.is_empty());
    plan.set_clock(1_005_000);
    plan.begin_epoch();
    plan.tick(&mut out);
    let delta = plan.epoch_delta().expect("epoch");
    plan.end_epoch();
    assert_eq!(lines(&out), vec!["k=a window_start=0 n=1"]);
    assert_eq!(plan.window_stats().and_then(|s| s.watermark), Some(5400));
    // The advance is in the delta: a replica built from it agrees.
    let mut replica = Plan::compile_with(sql, &opts).expect("compiles");
    replica.apply_delta(&delta).expect("applies");
    assert_eq!(replica.window_stats().and_then(|s| s.watermark), Some(5400));
    // An entry behind the advanced watermark is late.
    out.clear();
    plan.process_batch(&[Entry::new(EntryId::new(900, 0), &f)], &mut out);
    assert!(out.is_empty());
    assert_eq!(plan.window_stats().map(|s| s.late_dropped), Some(1));
    assert_eq!(plan.next_tick_ms(), None);
}

#[test]
fn count_distinct_compares_bytes_and_skips_nulls() {
    let evs: &[Ev<'_>] = &[
        (1, &[("x", "a")]),
        (2, &[("x", "b")]),
        (3, &[("x", "a")]),
        (4, &[("y", "1")]),
        (5, &[("x", "1")]),
        (6, &[("x", "1.0")]),
    ];
    assert_eq!(
        one_window("count(DISTINCT x) AS d, count(x) AS n", evs),
        "window_start=0 d=4 n=5"
    );
    assert_eq!(
        one_window("count(DISTINCT x) AS d", &[(1, &[("y", "1")])]),
        "window_start=0 d=0"
    );
}

#[test]
fn percentiles_interpolate_as_postgres() {
    // PostgreSQL: percentile_cont(0.5) of 1,2,3,4 = 2.5; 0.25 → 1.75.
    let evs: &[Ev<'_>] = &[
        (1, &[("x", "4")]),
        (2, &[("x", "1")]),
        (3, &[("x", "3")]),
        (4, &[("x", "2")]),
        (5, &[("y", "9")]),
    ];
    assert_eq!(
        one_window(
            "median(x) AS m, percentile_cont(0.25) WITHIN GROUP (ORDER BY x) AS q, percentile(x, 1) AS hi, percentile_cont(0) WITHIN GROUP (ORDER BY x ASC) AS lo",
            evs
        ),
        "window_start=0 m=2.5 q=1.75 hi=4 lo=1"
    );
    assert_eq!(
        one_window("median(x) AS m", &[(1, &[("x", "7")])]),
        "window_start=0 m=7"
    );
    assert_eq!(
        one_window("median(x) AS m, count(*) AS n", &[(1, &[("y", "7")])]),
        "window_start=0 n=1"
    );
    // Huge and tiny values keep their magnitude.
    assert_eq!(
        one_window(
            "median(x) AS m",
            &[
                (1, &[("x", "1e300")]),
                (2, &[("x", "1e-300")]),
                (3, &[("x", "-1e300")])
            ]
        ),
        "window_start=0 m=1e-300"
    );
}

#[test]
fn percentile_beyond_the_exact_bound_is_within_one_percent() {
    let sql = "INSERT INTO o SELECT median(x) AS m, percentile_cont(0.9) WITHIN GROUP (ORDER BY x) AS p9 FROM s GROUP BY TUMBLE(_ms, 100000)";
    let mut plan = Plan::compile(sql).expect("compiles");
    let n = 5000u64;
    let vals: Vec<String> = (0..n).map(|i| ((i * 7919) % n + 1).to_string()).collect();
    let rows: Vec<Vec<(&str, &str)>> = vals.iter().map(|v| vec![("x", v.as_str())]).collect();
    let entries: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, f)| Entry::new(EntryId::new(i as u64, 0), f))
        .collect();
    let mut out = Vec::new();
    plan.process_batch(&entries, &mut out);
    let end: &[(&str, &str)] = &[];
    plan.process_batch(&[Entry::new(EntryId::new(200_000, 0), &end)], &mut out);
    assert_eq!(out.len(), 1);
    let get = |k: &[u8]| -> f64 {
        std::str::from_utf8(out[0].get(k).expect("field"))
            .expect("utf8")
            .parse()
            .expect("number")
    };
    // Exact: 1..=5000, median 2500.5, p90 4500.1.
    let (m, p9) = (get(b"m"), get(b"p9"));
    assert!((m - 2500.5).abs() / 2500.5 <= 0.01, "{m}");
    assert!((p9 - 4500.1).abs() / 4500.1 <= 0.01, "{p9}");
}

#[test]
fn twap_weights_prices_by_time() {
    let sql = |aggs: &str| {
        format!("INSERT INTO o SELECT k, window_start, {aggs} FROM s GROUP BY k, TUMBLE(ts, 1000)")
    };
    // One price: that price.
    let out = run(
        &sql("twap(p) AS t"),
        &WindowOptions::default(),
        &[
            (1, &[("k", "a"), ("ts", "500"), ("p", "10")]),
            (2, &[("k", "z"), ("ts", "5000")]),
        ],
    );
    assert_eq!(out, vec!["k=a window_start=0 t=10"]);
    // 10 from 200 to 600, 20 from 600 to 1000: no carry, starts at 200:
    // (10*400 + 20*400) / 800 = 15. Equal times: the later entry holds.
    // Next window: 20 carries in from 1000 to 1500, then 40 to 2000: 30.
    let out = run(
        &sql("twap(p) AS t"),
        &WindowOptions::default(),
        &[
            (1, &[("k", "a"), ("ts", "200"), ("p", "10")]),
            (2, &[("k", "a"), ("ts", "600"), ("p", "99")]),
            (3, &[("k", "a"), ("ts", "600"), ("p", "20")]),
            (4, &[("k", "a"), ("ts", "700")]),
            (5, &[("k", "a"), ("ts", "1500"), ("p", "40")]),
            (6, &[("k", "z"), ("ts", "2500")]),
        ],
    );
    assert_eq!(
        out,
        vec!["k=a window_start=0 t=15", "k=a window_start=1000 t=30"]
    );
    // Huge and tiny prices.
    let out = run(
        &sql("twap(p) AS t"),
        &WindowOptions::default(),
        &[
            (1, &[("k", "a"), ("ts", "0"), ("p", "1e308")]),
            (2, &[("k", "a"), ("ts", "500"), ("p", "1e308")]),
            (3, &[("k", "b"), ("ts", "0"), ("p", "1e-300")]),
            (4, &[("k", "z"), ("ts", "5000")]),
        ],
    );
    assert_eq!(
        out,
        vec!["k=a window_start=0 t=1e308", "k=b window_start=0 t=1e-300"]
    );
}

#[test]
fn twap_carries_across_hop_panes_and_dropped_windows() {
    // HOP(500, 1000): window [500,1500) holds 30 at 1200; the price before
    // 500 (10 at 100, in pane [0,500)) carries in: (10*700 + 30*300)/1000.
    let sql = "INSERT INTO o SELECT window_start, twap(p) AS t FROM s GROUP BY HOP(ts, 500, 1000)";
    let out = run(
        sql,
        &WindowOptions::default(),
        &[
            (1, &[("ts", "100"), ("p", "10")]),
            (2, &[("ts", "1200"), ("p", "30")]),
            (3, &[("ts", "9000")]),
        ],
    );
    assert_eq!(
        out,
        vec![
            "window_start=-500 t=10",
            "window_start=0 t=10",
            "window_start=500 t=16",
            // 10 still carries in: (10*200 + 30*800)/1000.
            "window_start=1000 t=26",
        ]
    );
}

#[test]
fn count_windows_tumble_and_slide_per_key() {
    let sql = "INSERT INTO o SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s FROM t GROUP BY k, COUNT_WINDOW(2)";
    let out = run(
        sql,
        &WindowOptions::default(),
        &[
            (10, &[("k", "a"), ("v", "1")]),
            (20, &[("k", "b"), ("v", "5")]),
            (15, &[("k", "a"), ("v", "2")]), // out of order: window_start is the least time
            (30, &[("k", "a"), ("v", "3")]),
            (40, &[("k", "b"), ("v", "6")]),
        ],
    );
    assert_eq!(
        out,
        vec![
            "k=a window_start=10 window_end=16 n=2 s=3",
            "k=b window_start=20 window_end=41 n=2 s=11",
        ]
    );
    let sql = "INSERT INTO o SELECT window_start, count(*) AS n, sum(v) AS s, twap(v) AS tw FROM t GROUP BY COUNT_WINDOW(3, 2)";
    let evs: Vec<(u64, Vec<(&str, String)>)> = (1..=7u64)
        .map(|i| (i * 10, vec![("v", i.to_string())]))
        .collect();
    let rows: Vec<Vec<(&str, &str)>> = evs
        .iter()
        .map(|(_, f)| f.iter().map(|(k, v)| (*k, v.as_str())).collect())
        .collect();
    let evs: Vec<Ev<'_>> = evs
        .iter()
        .zip(&rows)
        .map(|((ms, _), r)| (*ms, r.as_slice()))
        .collect();
    let out = run(sql, &WindowOptions::default(), &evs);
    // Entries 1-3, 3-5, 5-7. twap of [10, 31) with 1,2,3 at 10,20,30:
    // (1*10 + 2*10 + 3*1)/21; then 2 carries in at 30 for [30, 51).
    assert_eq!(
        out,
        vec![
            format!(
                "window_start=10 n=3 s=6 tw={}",
                ferrite_pipeline::value::format_float(
                    1.0 * (10.0 / 21.0) + 2.0 * (10.0 / 21.0) + 3.0 * (1.0 / 21.0)
                )
            ),
            format!(
                "window_start=30 n=3 s=12 tw={}",
                ferrite_pipeline::value::format_float(
                    2.0 * 0.0 + 3.0 * (10.0 / 21.0) + 4.0 * (10.0 / 21.0) + 5.0 * (1.0 / 21.0)
                )
            ),
            format!(
                "window_start=50 n=3 s=18 tw={}",
                ferrite_pipeline::value::format_float(
                    5.0 * (10.0 / 21.0) + 6.0 * (10.0 / 21.0) + 7.0 * (1.0 / 21.0)
                )
            ),
        ]
    );
    for bad in [
        "INSERT INTO o SELECT count(*) AS n FROM t GROUP BY COUNT_WINDOW(0)",
        "INSERT INTO o SELECT count(*) AS n FROM t GROUP BY COUNT_WINDOW(2, 3)",
        "INSERT INTO o SELECT count(*) AS n FROM t GROUP BY COUNT_WINDOW(x)",
    ] {
        assert!(
            matches!(Plan::compile(bad), Err(PlanError::Invalid(_))),
            "{bad}"
        );
    }
    let wm = WindowOptions {
        watermark_ms: 5,
        ..Default::default()
    };
    assert!(matches!(
        Plan::compile_with(
            "INSERT INTO o SELECT count(*) AS n FROM t GROUP BY COUNT_WINDOW(2)",
            &wm
        ),
        Err(PlanError::Invalid(_))
    ));
}

/// A version-3 window state (or delta, `delta`) of a TUMBLE plan without
/// Ext aggregates and without revisions, rewritten as version 1: no clock
/// (27 bytes after the first globals), rows with three header words
/// `[start, end, rev]` instead of one.
fn to_v1(v3: &[u8], pane: u64, delta: bool) -> Vec<u8> {
    assert!(v3[0] == 3 || v3[0] == 4, "version {}", v3[0]);
    let u32_at = |at: usize| u32::from_le_bytes([v3[at], v3[at + 1], v3[at + 2], v3[at + 3]]);
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&v3[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let stride = u32_at(1) as usize;
    let mut v = vec![1u8];
    v.extend_from_slice(&(stride as u32 + 2).to_le_bytes());
    let g = 5;
    v.extend_from_slice(&v3[g..g + 25]);
    let mut at = g + 25 + 27;
    if delta {
        assert_eq!(v3[at], 0, "no revisions");
        v.push(0);
        at += 1;
    }
    let nkeys = u32_at(at);
    v.extend_from_slice(&v3[at..at + 4]);
    at += 4;
    for _ in 0..nkeys {
        let len = u32_at(at) as usize;
        v.extend_from_slice(&v3[at..at + 4 + len]);
        at += 4 + len;
        if delta {
            v.push(v3[at]);
            at += 1;
            if v3[at - 1] == 0 {
                continue;
            }
        }
        let nrows = u32_at(at) as usize;
        v.extend_from_slice(&v3[at..at + 4]);
        at += 4;
        for _ in 0..nrows {
            let h = u64_at(at);
            let start = h & !(1 << 63);
            for w in [start, start + pane, h & (1 << 63)] {
                v.extend_from_slice(&w.to_le_bytes());
            }
            v.extend_from_slice(&v3[at + 8..at + 8 * stride]);
            at += 8 * stride;
        }
    }
    v.extend_from_slice(&v3[at..]);
    v
}

/// The window operator's frame of a plan snapshot, and the frame's place.
fn window_frame(snap: &[u8]) -> (usize, usize) {
    let n = u32::from_le_bytes([snap[1], snap[2], snap[3], snap[4]]) as usize;
    let mut at = 5;
    for _ in 0..n {
        let len = u32::from_le_bytes([snap[at], snap[at + 1], snap[at + 2], snap[at + 3]]) as usize;
        if len > 0 {
            return (at + 4, len);
        }
        at += 4 + len;
    }
    panic!("no window state");
}

#[test]
fn version_1_state_and_deltas_are_still_read() {
    let sql = "INSERT INTO o SELECT k, window_start, count(*) AS n, sum(v) AS s FROM t GROUP BY k, TUMBLE(_ms, 1000)";
    let opts = WindowOptions {
        watermark_ms: 10,
        ..Default::default()
    };
    let mut plan = Plan::compile_with(sql, &opts).expect("compiles");
    let f: &[(&str, &str)] = &[("k", "a"), ("v", "2")];
    plan.begin_epoch();
    plan.process_batch(&[Entry::new(EntryId::new(100, 0), &f)], &mut Vec::new());
    let delta = plan.epoch_delta().expect("epoch");
    plan.end_epoch();
    let snap = plan.snapshot();
    let (at, len) = window_frame(&snap);
    let v1 = to_v1(&snap[at..at + len], 1000, false);
    let mut old = snap[..at - 4].to_vec();
    old.extend_from_slice(&(v1.len() as u32).to_le_bytes());
    old.extend_from_slice(&v1);
    old.extend_from_slice(&snap[at + len..]);
    let mut restored = Plan::compile_with(sql, &opts).expect("compiles");
    restored.restore(&old).expect("a version 1 state restores");
    let mut replayed = Plan::compile_with(sql, &opts).expect("compiles");
    replayed
        .apply_delta(&to_v1(&delta, 1000, true))
        .expect("a version 1 delta applies");
    for p in [&mut restored, &mut replayed] {
        let mut out = Vec::new();
        let g: &[(&str, &str)] = &[("k", "a"), ("v", "3")];
        p.process_batch(&[Entry::new(EntryId::new(500, 0), &g)], &mut out);
        p.process_batch(&[Entry::new(EntryId::new(2000, 0), &g)], &mut out);
        assert_eq!(lines(&out), vec!["k=a window_start=0 n=2 s=5"]);
    }
}

#[test]
fn state_bytes_per_key_and_window() {
    // count, sum and vwap on TUMBLE with 10,000 keys.
    let mut plan = Plan::compile(
        "INSERT INTO o SELECT k, count(*) AS n, sum(v) AS s, vwap(p, v) AS w FROM t GROUP BY k, TUMBLE(_ms, 60000)",
    )
    .expect("compiles");
    let keys: Vec<String> = (0..10_000).map(|i| format!("SYM{i}")).collect();
    let rows: Vec<Vec<(&str, &str)>> = keys
        .iter()
        .map(|k| vec![("k", k.as_str()), ("p", "10.5"), ("v", "3")])
        .collect();
    let entries: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, f)| Entry::new(EntryId::new(1, i as u64), f))
        .collect();
    plan.process_batch(&entries, &mut Vec::new());
    let st = plan.window_stats().expect("windowed");
    let per = st.state_bytes / st.open_windows;
    eprintln!("state bytes per key and window (count, sum, vwap; TUMBLE; 10,000 keys): {per}");
    assert!(per <= 131, "{per}");
    // count(DISTINCT) counts what it keeps.
    let mut plan = Plan::compile(
        "INSERT INTO o SELECT count(DISTINCT v) AS d FROM t GROUP BY TUMBLE(_ms, 60000)",
    )
    .expect("compiles");
    let vals: Vec<String> = (0..1000).map(|i| format!("value-{i:06}")).collect();
    let rows: Vec<Vec<(&str, &str)>> = vals.iter().map(|v| vec![("v", v.as_str())]).collect();
    let entries: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, f)| Entry::new(EntryId::new(1, i as u64), f))
        .collect();
    plan.process_batch(&entries, &mut Vec::new());
    let st = plan.window_stats().expect("windowed");
    assert!(st.state_bytes >= 1000 * 12, "{}", st.state_bytes);
}

#[test]
fn explain_shows_emit_idle_and_count_windows() {
    let opts = WindowOptions {
        emit: ferrite_pipeline::Emit::Updates { every_ms: 500 },
        idle_ms: 3000,
        ..Default::default()
    };
    let plan = Plan::compile_with(
        "INSERT INTO o SELECT k, twap(p) AS t, median(p) AS m, count(DISTINCT u) AS d FROM s GROUP BY k, TUMBLE(_ms, 1000)",
        &opts,
    )
    .expect("compiles");
    let x = plan.explain();
    assert!(x.contains("emit updates every 500 ms"), "{x}");
    assert!(x.contains("idle 3000 ms"), "{x}");
    let plan = Plan::compile(
        "INSERT INTO o SELECT k, count(*) AS n FROM s GROUP BY k, COUNT_WINDOW(10, 5)",
    )
    .expect("compiles");
    let x = plan.explain();
    assert!(
        x.contains("COUNT_WINDOW(size 10 entries, slide 5, panes of 5)")
            && x.contains("emit when full"),
        "{x}"
    );
    // IDLE needs a time window.
    let idle = WindowOptions {
        idle_ms: 5,
        ..Default::default()
    };
    assert!(matches!(
        Plan::compile_with(
            "INSERT INTO o SELECT k, count(*) AS n FROM s GROUP BY k",
            &idle
        ),
        Err(PlanError::Invalid(_))
    ));
    // A stateless plan ignores the clock.
    let mut plain = Plan::compile("INSERT INTO o SELECT * FROM s").expect("compiles");
    plain.set_clock(5);
    let mut out = Vec::new();
    plain.tick(&mut out);
    assert!(out.is_empty());
    assert_eq!(plain.next_tick_ms(), None);
}

/// Results written straight from the window's rows (no HAVING, every
/// column a key, aggregate or window bound) are the records the general
/// projection writes: the same statements with a HAVING that keeps every
/// result go through the internal record and the SELECT list instead.
#[test]
fn direct_results_match_the_projection() {
    let opts = WindowOptions {
        lateness_ms: 3_000,
        ..Default::default()
    };
    let select = "sym, venue, window_start, window_end, sum(qty) AS q, avg(px) AS a, \
                  vwap(px, qty) AS v, min(px) AS lo, count(*) AS n, sym AS again";
    let direct =
        format!("INSERT INTO o SELECT {select} FROM s GROUP BY sym, venue, HOP(_ms, 1000, 3000)");
    let general = format!(
        "INSERT INTO o SELECT {select} FROM s GROUP BY sym, venue, HOP(_ms, 1000, 3000) \
         HAVING count(*) >= 0"
    );
    // Deterministic pseudo-random ticks, some late, some without a venue
    // (a NULL key) or a quantity, prices with and without fractions.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut evs: Vec<(u64, Vec<(String, String)>)> = Vec::new();
    let mut t = 0u64;
    for _ in 0..3_000 {
        let r = next();
        t += r % 40;
        let at = if r % 17 == 0 {
            t.saturating_sub(2_500)
        } else {
            t
        };
        let mut f = vec![("sym".to_string(), format!("S{}", r % 7))];
        if r % 5 != 0 {
            f.push(("venue".into(), format!("v{}", (r >> 8) % 3)));
        }
        if r % 11 != 0 {
            f.push(("qty".into(), format!("{}", (r >> 16) % 500)));
        }
        let px = match (r >> 24) % 3 {
            0 => format!("{}", (r >> 30) % 1000),
            1 => format!("{}.{:02}", (r >> 30) % 1000, (r >> 40) % 100),
            _ => format!("{}", ((r >> 30) % 1_000_000) as f64 / 7.0),
        };
        f.push(("px".into(), px));
        evs.push((at, f));
    }
    let run_all = |sql: &str| -> (Vec<String>, Vec<Option<bytes::Bytes>>) {
        let mut plan = Plan::compile_with(sql, &opts).expect("compiles");
        let mut out = Vec::new();
        in_batches(&evs, |entries| {
            let st = plan.process_batch(entries, &mut out);
            assert_eq!(st.failed, 0, "{:?}", st.first_error);
        });
        let keys = out.iter().map(|r| r.key.clone()).collect();
        (lines(&out), keys)
    };
    let (a, ka) = run_all(&direct);
    let (b, kb) = run_all(&general);
    assert!(a.len() > 1_000, "{}", a.len());
    assert!(a.iter().any(|l| l.contains("_rev=")), "no revisions");
    assert!(a.iter().any(|l| !l.contains("venue=")), "no NULL key");
    assert_eq!(a, b);
    assert_eq!(ka, kb);

    // The runner's path: direct results written flat, the batches' results
    // appended to one another, then read back as records; the same
    // records (IDs, keys, fields) and output counts as process_batch's.
    let records_of = |flat_path: bool| -> (Vec<Record>, u64) {
        let mut plan = Plan::compile_with(&direct, &opts).expect("compiles");
        let (mut out, mut flat, mut output) = (Vec::new(), FlatRecords::default(), 0);
        in_batches(&evs, |entries| {
            let st = if flat_path {
                let mut batch = FlatRecords::default();
                let st = plan.process_batch_flat(entries, &mut out, &mut batch);
                flat.append(&mut batch);
                assert!(batch.is_empty());
                st
            } else {
                plan.process_batch(entries, &mut out)
            };
            output += st.output;
        });
        if flat_path {
            assert!(out.is_empty(), "direct results went to records");
            assert_eq!(flat.len() as u64, output);
            flat.drain_into(&mut out);
            assert!(flat.is_empty());
        }
        (out, output)
    };
    let (flat, n_flat) = records_of(true);
    let (recs, n_recs) = records_of(false);
    assert_eq!(n_flat, n_recs);
    assert_eq!(flat, recs);
    assert_eq!(lines(&flat), a);
}

/// `evs` (time, fields) as entries in batches of 64, IDs `time-index`.
fn in_batches(evs: &[(u64, Vec<(String, String)>)], mut f: impl FnMut(&[Entry<'_>])) {
    for (i, chunk) in evs.chunks(64).enumerate() {
        let fields: Vec<Vec<(&str, &str)>> = chunk
            .iter()
            .map(|(_, f)| f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect())
            .collect();
        let entries: Vec<Entry<'_>> = chunk
            .iter()
            .zip(&fields)
            .enumerate()
            .map(|(j, ((ms, _), f))| Entry::new(EntryId::new(*ms, (i * 64 + j) as u64), f))
            .collect();
        f(&entries);
    }
}
