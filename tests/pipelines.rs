//! PIPELINE.* through the real binary: every command and its errors, the
//! results against a reference computed here, the position as a consumer
//! group, failures, and restarts (log and checkpoint) without duplicates or
//! gaps. The crash loop is tests/crash_loop_pipelines.rs.
mod common;

use std::time::{Duration, Instant};

use common::conn::RespConn;
use common::pipes::{caught_up, err, info, ok};
use common::resp::Node;
use common::server::{Server, TempDir};
use common::state::{call_str, field, int, items, text, xrange_all, Entry};

const WAIT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

fn start(dir: &TempDir, extra: &[&str]) -> (Server, RespConn) {
    common::pipes::start("pipelines", dir, extra)
}

const BIG_TRADES: &str = "INSERT INTO big_trades SELECT symbol, price, volume, price * volume AS notional FROM trades WHERE volume > 10 AND symbol IN ('BTC','ETH')";

fn info_int(c: &mut RespConn, name: &str, f: &str) -> i64 {
    int(field(&info(c, name), f))
}

fn info_text(c: &mut RespConn, name: &str, f: &str) -> String {
    text(field(&info(c, name), f))
}

/// Polls (bounded) until the pipeline's state is `want`.
fn state_becomes(c: &mut RespConn, name: &str, want: &str) -> Node {
    let deadline = Instant::now() + WAIT;
    loop {
        let i = info(c, name);
        if text(field(&i, "state")) == want {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never {want}: {}",
            i.render()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The reference for BIG_TRADES, entry by entry.
fn big_trades_ref(src: &[Entry]) -> Vec<Vec<(String, String)>> {
    src.iter()
        .filter_map(|(_, f)| {
            let get = |k: &str| f.iter().find(|(n, _)| n == k.as_bytes()).map(|(_, v)| s(v));
            let symbol = get("symbol")?;
            let price: f64 = get("price")?.parse().ok()?;
            let volume: i64 = get("volume")?.parse().ok()?;
            if volume <= 10 || !(symbol == "BTC" || symbol == "ETH") {
                return None;
            }
            Some(vec![
                ("symbol".into(), symbol),
                ("price".into(), get("price")?),
                ("volume".into(), get("volume")?),
                ("notional".into(), format!("{}", price * volume as f64)),
            ])
        })
        .collect()
}

fn fields_of(sink: &[Entry]) -> Vec<Vec<(String, String)>> {
    sink.iter()
        .map(|(_, f)| f.iter().map(|(k, v)| (s(k), s(v))).collect())
        .collect()
}

fn add_trades(c: &mut RespConn, from: usize, n: usize) {
    let symbols = ["BTC", "ETH", "SOL", "BTC"];
    for i in from..from + n {
        let price = format!("{}", (i % 40) as f64 / 4.0 + 1.0);
        let volume = (i * 7 % 25).to_string();
        let r = call_str(
            c,
            &[
                "XADD",
                "trades",
                "*",
                "symbol",
                symbols[i % 4],
                "price",
                &price,
                "volume",
                &volume,
            ],
        );
        assert!(!r.is_error(), "{}", r.render());
    }
}

#[test]
fn a_pipeline_writes_the_reference_results_and_shows_its_position() {
    let dir = TempDir::new("pipe-basic").unwrap_or_else(|e| panic!("{e}"));
    let (_s, mut c) = start(&dir, &[]);
    add_trades(&mut c, 0, 200);
    ok(
        &mut c,
        &["PIPELINE.CREATE", "big", "FROM", "0", "AS", BIG_TRADES],
    );
    caught_up(&mut c, "big");
    add_trades(&mut c, 200, 300);
    caught_up(&mut c, "big");
    let src = xrange_all(&mut c, "trades");
    let sink = xrange_all(&mut c, "big_trades");
    let want = big_trades_ref(&src);
    assert!(!want.is_empty());
    assert_eq!(fields_of(&sink), want);
    // Counters.
    assert_eq!(info_int(&mut c, "big", "entries_in"), 500);
    assert_eq!(info_int(&mut c, "big", "entries_out"), want.len() as i64);
    assert_eq!(
        info_int(&mut c, "big", "entries_filtered"),
        500 - want.len() as i64
    );
    assert_eq!(info_int(&mut c, "big", "entries_failed"), 0);
    assert!(info_int(&mut c, "big", "epoch") >= 1);
    assert_eq!(info_text(&mut c, "big", "source"), "trades");
    assert_eq!(info_text(&mut c, "big", "sink"), "big_trades");
    assert_eq!(info_text(&mut c, "big", "sql"), BIG_TRADES);
    let last = src.last().map(|e| e.0.to_string()).unwrap_or_default();
    assert_eq!(info_text(&mut c, "big", "cursor"), last);
    // The position is a consumer group named after the pipeline.
    let groups = call_str(&mut c, &["XINFO", "GROUPS", "trades"]);
    let g = &items(&groups)[0];
    assert_eq!(text(field(g, "name")), "big");
    assert_eq!(text(field(g, "last-delivered-id")), last);
    assert_eq!(int(field(g, "entries-read")), 500);
    assert_eq!(int(field(g, "lag")), 0);
    assert_eq!(int(field(g, "consumers")), 0);
    // LIST, EXPLAIN (a name and a statement), INFO pipelines.
    let l = call_str(&mut c, &["PIPELINE.LIST"]);
    assert_eq!(items(&l).iter().map(text).collect::<Vec<_>>(), ["big"]);
    let e = text(&call_str(&mut c, &["PIPELINE.EXPLAIN", "big"]));
    assert!(
        e.contains("Filter volume > 10") && e.contains("Sink big_trades"),
        "{e}"
    );
    let e = text(&call_str(
        &mut c,
        &["PIPELINE.EXPLAIN", "INSERT INTO o SELECT a + 1 AS b FROM i"],
    ));
    assert!(e.starts_with("Pipeline i -> o"), "{e}");
    // EXPLAIN created nothing.
    assert_eq!(items(&call_str(&mut c, &["PIPELINE.LIST"])).len(), 1);
    assert_eq!(int(&call_str(&mut c, &["EXISTS", "i", "o"])), 0);
    let i = text(&call_str(&mut c, &["INFO", "pipelines"]));
    assert!(
        i.starts_with("# Pipelines\r\npipelines:1\r\npipelines_running:1\r\n"),
        "{i}"
    );
    assert!(
        i.contains("pipeline_big:state=running,source=trades,sink=big_trades,in=500,"),
        "{i}"
    );
    let all = text(&call_str(&mut c, &["INFO"]));
    assert!(
        all.contains("# Pipelines\r\n") && all.contains("# Keyspace\r\n"),
        "{all}"
    );
    // RESP3: PIPELINE.INFO is a map.
    call_str(&mut c, &["HELLO", "3"]);
    let r = call_str(&mut c, &["PIPELINE.INFO", "big"]);
    assert!(matches!(&r, Node::Agg { kind: b'%', .. }), "{}", r.render());
}

#[test]
fn commands_refuse_what_they_cannot_do_with_clear_errors() {
    let dir = TempDir::new("pipe-errors").unwrap_or_else(|e| panic!("{e}"));
    let (_s, mut c) = start(&dir, &[]);
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "p",
            "AS",
            "INSERT INTO b SELECT * FROM a",
        ],
    );
    let cases: &[(&[&str], &str)] = &[
        (&["PIPELINE.CREATE", "p", "AS", "INSERT INTO c SELECT * FROM a"], "ERR pipeline 'p' already exists (PIPELINE.CREATE ... REPLACE replaces it)"),
        (&["PIPELINE.CREATE", "q", "AS", "INSERT INTO a SELECT * FROM b"], "ERR pipeline 'q' would close a cycle: b -> a -> b"),
        (&["PIPELINE.CREATE", "q", "AS", "INSERT INTO a SELECT * FROM a"], "ERR the sink stream must differ from the source stream (a)"),
        (&["PIPELINE.CREATE", "q", "AS", "SELECT 1"], "ERR not supported: a pipeline is `INSERT INTO sink SELECT ... FROM source [WHERE ...]`"),
        (&["PIPELINE.CREATE", "q", "AS", "INSERT INTO o SELECT y, count(*) FROM i GROUP BY x"], "ERR"),
        (&["PIPELINE.CREATE", "q", "AS", "INSERT INTO o SELECT nosuchfn(x) FROM i"], "ERR"),
        (&["PIPELINE.CREATE", "q", "AS"], "ERR wrong number of arguments for 'pipeline.create' command"),
        (&["PIPELINE.CREATE", "q", "FROM", "0", "INSERT INTO o SELECT * FROM i"], "ERR syntax error"),
        (&["PIPELINE.CREATE", "q", "NOPE", "AS", "INSERT INTO o SELECT * FROM i"], "ERR syntax error"),
        (&["PIPELINE.CREATE", "q", "AS", "INSERT INTO o SELECT * FROM i", "extra"], "ERR syntax error"),
        (&["PIPELINE.CREATE", "q", "COMMIT_INTERVAL", "0", "AS", "INSERT INTO o SELECT * FROM i"], "ERR COMMIT_INTERVAL must be between 1 and 60000 milliseconds"),
        (&["PIPELINE.CREATE", "q", "COMMIT_INTERVAL", "x", "AS", "INSERT INTO o SELECT * FROM i"], "ERR value is not an integer or out of range"),
        (&["PIPELINE.CREATE", "q", "SINK_MAXLEN", "-1", "AS", "INSERT INTO o SELECT * FROM i"], "ERR SINK_MAXLEN can't be negative"),
        (&["PIPELINE.CREATE", "bad name", "AS", "INSERT INTO o SELECT * FROM i"], "ERR invalid pipeline name: 1 to 128 letters, digits or _-.:"),
        (&["PIPELINE.CREATE", "q", "FROM", "nope", "AS", "INSERT INTO o SELECT * FROM i"], "ERR Invalid stream ID specified as stream command argument"),
        (&["PIPELINE.CREATE", "q", "AS", "INSERT INTO o SELECT * FROM str"], "WRONGTYPE Operation against a key holding the wrong kind of value"),
        (&["PIPELINE.CREATE", "q", "AS", "INSERT INTO str SELECT * FROM i"], "WRONGTYPE Operation against a key holding the wrong kind of value"),
        (&["PIPELINE.CREATE", "mine", "AS", "INSERT INTO o SELECT * FROM g"], "ERR consumer group 'mine' already exists on 'g': a pipeline keeps its position in a consumer group named after it"),
        (&["PIPELINE.INFO", "nope"], "ERR no such pipeline 'nope'"),
        (&["PIPELINE.DROP", "nope"], "ERR no such pipeline 'nope'"),
        (&["PIPELINE.PAUSE", "nope"], "ERR no such pipeline 'nope'"),
        (&["PIPELINE.RESUME", "nope"], "ERR no such pipeline 'nope'"),
        (&["PIPELINE.RESET", "nope"], "ERR no such pipeline 'nope'"),
        (&["PIPELINE.RESET", "p", "FROM"], "ERR syntax error"),
        (&["PIPELINE.RESET", "p", "TO", "0"], "ERR syntax error"),
        (&["PIPELINE.INFO"], "ERR wrong number of arguments for 'pipeline.info' command"),
        (&["PIPELINE.LIST", "x"], "ERR wrong number of arguments for 'pipeline.list' command"),
        (&["PIPELINE.EXPLAIN", "nope"], "ERR"),
        (&["PIPELINE.NOPE"], "ERR unknown command 'PIPELINE.NOPE'"),
    ];
    call_str(&mut c, &["SET", "str", "x"]);
    call_str(&mut c, &["XGROUP", "CREATE", "g", "mine", "$", "MKSTREAM"]);
    for (cmd, want) in cases {
        let got = err(&mut c, cmd);
        assert!(got.starts_with(want), "{cmd:?}: got {got:?}, want {want:?}");
    }
    // Nothing of the refused ones exists.
    let l = call_str(&mut c, &["PIPELINE.LIST"]);
    assert_eq!(items(&l).iter().map(text).collect::<Vec<_>>(), ["p"]);
    // REPLACE is accepted; COMMAND knows the commands.
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "p",
            "REPLACE",
            "AS",
            "INSERT INTO c SELECT * FROM a",
        ],
    );
    assert_eq!(info_text(&mut c, "p", "sink"), "c");
    let ci = call_str(&mut c, &["COMMAND", "INFO", "pipeline.create"]);
    assert_eq!(int(&items(&items(&ci)[0])[1]), -4);
}

#[test]
fn pause_resume_reset_and_drop() {
    let dir = TempDir::new("pipe-control").unwrap_or_else(|e| panic!("{e}"));
    let (_s, mut c) = start(&dir, &[]);
    add_trades(&mut c, 0, 40);
    // PAUSED at creation, from `$`: the 40 entries before are not read.
    ok(
        &mut c,
        &["PIPELINE.CREATE", "big", "PAUSED", "AS", BIG_TRADES],
    );
    assert_eq!(info_text(&mut c, "big", "state"), "paused");
    add_trades(&mut c, 40, 40);
    assert_eq!(info_int(&mut c, "big", "lag_entries"), 40);
    assert_eq!(info_int(&mut c, "big", "entries_in"), 0);
    ok(&mut c, &["PIPELINE.RESUME", "big"]);
    caught_up(&mut c, "big");
    let src = xrange_all(&mut c, "trades");
    assert_eq!(
        fields_of(&xrange_all(&mut c, "big_trades")),
        big_trades_ref(&src[40..])
    );
    // RESET (default: from the start) writes everything again after.
    ok(&mut c, &["PIPELINE.RESET", "big"]);
    caught_up(&mut c, "big");
    let mut want = big_trades_ref(&src[40..]);
    want.extend(big_trades_ref(&src));
    assert_eq!(fields_of(&xrange_all(&mut c, "big_trades")), want);
    assert_eq!(info_int(&mut c, "big", "entries_in"), 80);
    // RESET FROM an ID.
    let mid = src[59].0.to_string();
    ok(&mut c, &["PIPELINE.RESET", "big", "FROM", &mid]);
    caught_up(&mut c, "big");
    want.extend(big_trades_ref(&src[60..]));
    assert_eq!(fields_of(&xrange_all(&mut c, "big_trades")), want);
    // DROP removes the pipeline and its group.
    ok(&mut c, &["PIPELINE.DROP", "big"]);
    assert_eq!(items(&call_str(&mut c, &["PIPELINE.LIST"])).len(), 0);
    assert_eq!(
        items(&call_str(&mut c, &["XINFO", "GROUPS", "trades"])).len(),
        0
    );
    // Inside MULTI.
    call_str(&mut c, &["MULTI"]);
    call_str(
        &mut c,
        &["PIPELINE.CREATE", "m", "FROM", "0", "AS", BIG_TRADES],
    );
    call_str(&mut c, &["PIPELINE.PAUSE", "m"]);
    let r = call_str(&mut c, &["EXEC"]);
    assert_eq!(items(&r).iter().map(text).collect::<Vec<_>>(), ["OK", "OK"]);
    assert_eq!(info_text(&mut c, "m", "state"), "paused");
}

#[test]
fn star_flat_map_sink_maxlen_and_failed_events() {
    let dir = TempDir::new("pipe-shapes").unwrap_or_else(|e| panic!("{e}"));
    let (_s, mut c) = start(&dir, &[]);
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "star",
            "COMMIT_INTERVAL",
            "1",
            "AS",
            "INSERT INTO s_out SELECT *, _ms AS ms FROM s",
        ],
    );
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "tags",
            "AS",
            "INSERT INTO t_out SELECT id, unnest(string_to_array(tags, ',')) AS tag FROM s",
        ],
    );
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "div",
            "SINK_MAXLEN",
            "3",
            "AS",
            "INSERT INTO d_out SELECT 100 / CAST(n AS INT) AS q FROM s",
        ],
    );
    let rows = [
        ("1", "a,b", "5"),
        ("2", "", "0"),
        ("3", "c", "x"),
        ("4", "d,e,f", "20"),
        ("5", "g", "4"),
        ("6", "h", "2"),
    ];
    for (id, tags, n) in rows {
        call_str(&mut c, &["XADD", "s", "*", "id", id, "tags", tags, "n", n]);
    }
    for p in ["star", "tags", "div"] {
        caught_up(&mut c, p);
    }
    let src = xrange_all(&mut c, "s");
    let star = fields_of(&xrange_all(&mut c, "s_out"));
    assert_eq!(star.len(), 6);
    for ((id, f), out) in src.iter().zip(&star) {
        let mut want: Vec<(String, String)> = f.iter().map(|(k, v)| (s(k), s(v))).collect();
        want.push(("ms".into(), id.0.to_string()));
        assert_eq!(*out, want);
    }
    let tags: Vec<(String, String)> = fields_of(&xrange_all(&mut c, "t_out"))
        .into_iter()
        .map(|f| (f[0].1.clone(), f[1].1.clone()))
        .collect();
    let want: Vec<(String, String)> = [
        ("1", "a"),
        ("1", "b"),
        ("3", "c"),
        ("4", "d"),
        ("4", "e"),
        ("4", "f"),
        ("5", "g"),
        ("6", "h"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(tags, want);
    // 100/0 and CAST('x') fail their events; MAXLEN 3 keeps the last three.
    assert_eq!(info_int(&mut c, "div", "entries_failed"), 2);
    assert_eq!(info_int(&mut c, "div", "entries_out"), 4);
    assert!(!info_text(&mut c, "div", "last_error").is_empty());
    let d = fields_of(&xrange_all(&mut c, "d_out"));
    let q: Vec<&str> = d.iter().map(|f| f[0].1.as_str()).collect();
    assert_eq!(q, ["5", "25", "50"]);
}

#[test]
fn a_deleted_or_retyped_source_or_sink_fails_the_pipeline_and_reset_recovers() {
    let dir = TempDir::new("pipe-fail").unwrap_or_else(|e| panic!("{e}"));
    let (_s, mut c) = start(&dir, &[]);
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "p",
            "AS",
            "INSERT INTO o SELECT * FROM i",
        ],
    );
    call_str(&mut c, &["XADD", "i", "*", "a", "1"]);
    caught_up(&mut c, "p");
    // Source deleted.
    call_str(&mut c, &["DEL", "i"]);
    let st = state_becomes(&mut c, "p", "failed");
    assert_eq!(
        text(field(&st, "error")),
        "the source stream 'i' was deleted"
    );
    // Recreated with XADD: RESET starts again (the group is created anew).
    call_str(&mut c, &["XADD", "i", "*", "a", "2"]);
    ok(&mut c, &["PIPELINE.RESET", "p"]);
    caught_up(&mut c, "p");
    assert_eq!(xrange_all(&mut c, "o").len(), 2);
    // The source turned into a string.
    call_str(&mut c, &["DEL", "i"]);
    call_str(&mut c, &["SET", "i", "x"]);
    let st = state_becomes(&mut c, "p", "failed");
    assert_eq!(
        text(field(&st, "error")),
        "the source 'i' now holds a string, not a stream"
    );
    assert!(err(&mut c, &["PIPELINE.RESET", "p"]).starts_with("WRONGTYPE"));
    call_str(&mut c, &["DEL", "i"]);
    call_str(&mut c, &["XADD", "i", "*", "a", "3"]);
    ok(&mut c, &["PIPELINE.RESET", "p"]);
    caught_up(&mut c, "p");
    // The sink deleted by another client.
    call_str(&mut c, &["DEL", "o"]);
    call_str(&mut c, &["XADD", "i", "*", "a", "4"]);
    let st = state_becomes(&mut c, "p", "failed");
    assert_eq!(
        text(field(&st, "error")),
        "the sink stream 'o' was deleted by another client"
    );
    // The sink turned into a hash.
    call_str(&mut c, &["HSET", "o", "f", "v"]);
    ok(&mut c, &["PIPELINE.RESUME", "p"]);
    let st = state_becomes(&mut c, "p", "failed");
    assert_eq!(
        text(field(&st, "error")),
        "the sink 'o' holds a hash, not a stream"
    );
    call_str(&mut c, &["DEL", "o"]);
    ok(&mut c, &["PIPELINE.RESUME", "p"]);
    caught_up(&mut c, "p");
    let o = fields_of(&xrange_all(&mut c, "o"));
    assert_eq!(o, vec![vec![("a".to_string(), "4".to_string())]]);
    // Other keys and clients were never disturbed.
    assert_eq!(text(&call_str(&mut c, &["PING"])), "PONG");
}

#[test]
fn trimmed_entries_are_counted_as_lost() {
    let dir = TempDir::new("pipe-lost").unwrap_or_else(|e| panic!("{e}"));
    let (_s, mut c) = start(&dir, &[]);
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "p",
            "PAUSED",
            "AS",
            "INSERT INTO o SELECT * FROM i",
        ],
    );
    for n in 0..10 {
        call_str(&mut c, &["XADD", "i", "*", "n", &n.to_string()]);
    }
    call_str(&mut c, &["XTRIM", "i", "MAXLEN", "4"]);
    ok(&mut c, &["PIPELINE.RESUME", "p"]);
    caught_up(&mut c, "p");
    assert_eq!(info_int(&mut c, "p", "entries_in"), 4);
    assert_eq!(info_int(&mut c, "p", "entries_lost"), 6);
    assert_eq!(xrange_all(&mut c, "o").len(), 4);
}

fn restart(server: &mut Server, c: &mut RespConn, dir: &TempDir, kill: bool) -> (Server, RespConn) {
    if kill {
        server.kill9().unwrap_or_else(|e| panic!("{e}"));
    } else {
        c.send_command(&common::state::argv(&["SHUTDOWN"]))
            .unwrap_or_else(|e| panic!("send SHUTDOWN: {e}"));
        server
            .wait_exit(EXIT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    start(dir, &[])
}

#[test]
fn definitions_positions_and_counters_survive_restarts_without_duplicates() {
    let dir = TempDir::new("pipe-restart").unwrap_or_else(|e| panic!("{e}"));
    let (mut s, mut c) = start(&dir, &[]);
    add_trades(&mut c, 0, 100);
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "big",
            "FROM",
            "0",
            "COMMIT_INTERVAL",
            "5",
            "AS",
            BIG_TRADES,
        ],
    );
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "paused",
            "PAUSED",
            "FROM",
            "0",
            "SINK_MAXLEN",
            "~",
            "100",
            "AS",
            "INSERT INTO p_out SELECT * FROM trades",
        ],
    );
    caught_up(&mut c, "big");
    for (round, kill) in [(1, true), (2, false), (3, true)] {
        add_trades(&mut c, round * 100, 100);
        let (s2, c2) = restart(&mut s, &mut c, &dir, kill);
        s = s2;
        c = c2;
        assert_eq!(
            info_text(&mut c, "paused", "state"),
            "paused",
            "round {round}"
        );
        assert_eq!(info_text(&mut c, "paused", "sink_maxlen"), "~ 100");
        assert_eq!(info_int(&mut c, "big", "commit_interval_ms"), 5);
        caught_up(&mut c, "big");
        let src = xrange_all(&mut c, "trades");
        assert_eq!(src.len(), (round + 1) * 100);
        assert_eq!(
            fields_of(&xrange_all(&mut c, "big_trades")),
            big_trades_ref(&src),
            "round {round} (kill: {kill})"
        );
        assert_eq!(info_int(&mut c, "big", "entries_in"), src.len() as i64);
    }
    ok(&mut c, &["PIPELINE.DROP", "paused"]);
    let (_s, mut c) = restart(&mut s, &mut c, &dir, true);
    let l = call_str(&mut c, &["PIPELINE.LIST"]);
    assert_eq!(items(&l).iter().map(text).collect::<Vec<_>>(), ["big"]);
}

#[test]
fn the_number_of_pipelines_is_bounded() {
    let dir = TempDir::new("pipe-bound").unwrap_or_else(|e| panic!("{e}"));
    let (_s, mut c) = start(&dir, &[]);
    let mut cmds = Vec::new();
    for i in 0..1024 {
        let sql = format!("INSERT INTO out{i} SELECT * FROM src");
        cmds.push(common::state::argv(&[
            "PIPELINE.CREATE",
            &format!("p{i}"),
            "AS",
            &sql,
        ]));
    }
    let (replies, failure) = common::state::pipeline(&mut c, &cmds);
    assert!(failure.is_none());
    assert!(replies.iter().all(|r| r.text() == Some(b"OK")));
    let e = err(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "one_more",
            "AS",
            "INSERT INTO x SELECT * FROM src",
        ],
    );
    assert_eq!(e, "ERR too many pipelines (at most 1024)");
    // Replacing one is still allowed; dropping one makes room.
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "p0",
            "REPLACE",
            "AS",
            "INSERT INTO y SELECT * FROM src",
        ],
    );
    ok(&mut c, &["PIPELINE.DROP", "p1"]);
    ok(
        &mut c,
        &[
            "PIPELINE.CREATE",
            "one_more",
            "AS",
            "INSERT INTO x SELECT * FROM src",
        ],
    );
    // Each is a consumer group on `src`.
    assert_eq!(
        items(&call_str(&mut c, &["XINFO", "GROUPS", "src"])).len(),
        1024
    );
}
