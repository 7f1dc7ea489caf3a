//! Lists survive restarts: from the commit log after SIGKILL, and from the
//! checkpoint SHUTDOWN writes (then more writes replayed on top of it).
//! Blocking pops served later are logged as what they did (BLPOP as LPOP,
//! BLMOVE as LMOVE, BLMPOP as `LPOP key n`): the lists they wrote, and the
//! ones they emptied, come back exactly.
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::conn::RespConn;
use common::resp::Node;
use common::server::{Launch, Server, TempDir};
use common::state::{argv, call_str, info_field, int, items, text};

const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// Per db and key: TYPE, the LRANGE elements, and whether it has a TTL.
type State = BTreeMap<(usize, String), (String, Vec<String>, bool)>;

fn state(c: &mut RespConn) -> State {
    let mut out = State::new();
    for db in [0usize, 3] {
        call_str(c, &["SELECT", &db.to_string()]);
        let keys: Vec<String> = items(&call_str(c, &["KEYS", "*"]))
            .iter()
            .map(text)
            .collect();
        for k in keys {
            let typ = text(&call_str(c, &["TYPE", &k]));
            let mut elems = Vec::new();
            if typ == "list" {
                elems = items(&call_str(c, &["LRANGE", &k, "0", "-1"]))
                    .iter()
                    .map(text)
                    .collect();
                assert_eq!(int(&call_str(c, &["LLEN", &k])), elems.len() as i64);
            }
            let ttl = int(&call_str(c, &["PTTL", &k])) > 0;
            out.insert((db, k), (typ, elems, ttl));
        }
    }
    call_str(c, &["SELECT", "0"]);
    out
}

fn same(what: &str, got: &State, want: &State) {
    let keys: std::collections::BTreeSet<_> = got.keys().chain(want.keys()).collect();
    let diff: Vec<String> = keys
        .into_iter()
        .filter(|k| got.get(*k) != want.get(*k))
        .map(|k| format!("{k:?}: got {:?}\n    want {:?}", got.get(k), want.get(k)))
        .collect();
    assert!(diff.is_empty(), "{what}: keys differ:\n{}", diff.join("\n"));
}

fn ok(n: &Node) {
    assert!(!n.is_error(), "error reply: {}", n.render());
}

fn run(c: &mut RespConn, cmds: &[&[&str]]) {
    for cmd in cmds {
        ok(&call_str(c, cmd));
    }
}

fn connect(s: &Server) -> RespConn {
    s.connect()
        .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail(20)))
}

/// Polls (bounded) `INFO clients` until `blocked_clients` is `n`.
fn wait_blocked(c: &mut RespConn, n: usize) {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        let v = info_field(c, "clients", "blocked_clients");
        if v.as_deref() == Some(n.to_string().as_str()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "blocked_clients is {v:?}, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Send a blocking command on `b` (it must block), to be read with [`served`].
fn block(main: &mut RespConn, b: &mut RespConn, cmd: &[&str], now_blocked: usize) {
    b.send_command(&argv(cmd))
        .unwrap_or_else(|e| panic!("send {cmd:?}: {e}"));
    wait_blocked(main, now_blocked);
}

fn served(b: &mut RespConn) -> Node {
    let r = b.read_reply(REPLY_TIMEOUT);
    let n = r
        .node()
        .cloned()
        .unwrap_or_else(|| panic!("blocked command: {}", r.render()));
    ok(&n);
    n
}

fn workload_one(s: &Server, c: &mut RespConn) {
    run(
        c,
        &[
            &["RPUSH", "l", "a", "b", "c", "d", "e"],
            &["LPUSH", "l", "z"],
            &["LPOP", "l"],
            &["RPOP", "l", "2"],
            &["LSET", "l", "1", "B"],
            &["LINSERT", "l", "AFTER", "B", "ins"],
            &["RPUSH", "l", "x", "a", "x"],
            &["LREM", "l", "-1", "x"],
            &["LMOVE", "l", "moved", "LEFT", "RIGHT"],
            &["RPOPLPUSH", "l", "moved"],
            &["LMPOP", "2", "none", "l", "RIGHT", "COUNT", "1"],
            &["RPUSH", "bin", "a\r\nb\0c", ""],
            &["RPUSH", "trim", "0", "1", "2", "3", "4", "5"],
            &["LTRIM", "trim", "1", "-2"],
            &["RPUSH", "gone", "a"],
            &["LPOP", "gone"],
            &["RPUSH", "ttl", "a"],
            &["EXPIRE", "ttl", "100000"],
            &["SELECT", "3"],
            &["RPUSH", "db3", "1", "2"],
            &["SELECT", "0"],
        ],
    );
    for i in 0..300 {
        ok(&call_str(c, &["RPUSH", "big", &format!("v{i}")]));
    }
    ok(&call_str(c, &["LTRIM", "big", "10", "-11"]));
    // A list over many 8 KiB chunks, with integers of every width and
    // writes in the middle.
    let pad = "p".repeat(100);
    for batch in 0..8 {
        let mut cmd = vec!["RPUSH".to_string(), "chunks".to_string()];
        for i in 0..50 {
            let n = batch * 50 + i;
            cmd.push(match n % 4 {
                0 => format!("{pad}{n}"),
                1 => (n as i64 * 1_000_003 - 200_000).to_string(),
                2 => (i64::MIN + n as i64).to_string(),
                _ => format!("-0{n}"),
            });
        }
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        ok(&call_str(c, &args));
    }
    run(
        c,
        &[
            &["LSET", "chunks", "150", "9223372036854775807"],
            &["LINSERT", "chunks", "BEFORE", "-0203", "inserted"],
            &["LREM", "chunks", "0", "-0103"],
            &["LPUSH", "chunks", "head", "-1"],
        ],
    );

    // Blocked pops served later: BLMOVE into a key a BLPOP waits on, a
    // BLMPOP with COUNT, and a BRPOPLPUSH.
    let mut b1 = connect(s);
    let mut b2 = connect(s);
    let mut b3 = connect(s);
    let mut b4 = connect(s);
    block(c, &mut b1, &["BLPOP", "chain-dst", "0"], 1);
    block(
        c,
        &mut b2,
        &["BLMOVE", "chain-src", "chain-dst", "LEFT", "RIGHT", "0"],
        2,
    );
    block(
        c,
        &mut b3,
        &["BLMPOP", "0", "1", "mp", "LEFT", "COUNT", "2"],
        3,
    );
    block(
        c,
        &mut b4,
        &["BLMOVE", "bm", "bm-dst", "RIGHT", "LEFT", "0"],
        4,
    );
    run(c, &[&["RPUSH", "chain-src", "c1", "c2"]]);
    assert_eq!(text(&served(&mut b2)), "c1");
    assert_eq!(
        items(&served(&mut b1)).iter().map(text).collect::<Vec<_>>(),
        ["chain-dst", "c1"]
    );
    run(
        c,
        &[
            &["RPUSH", "mp", "m1", "m2", "m3"],
            &["RPUSH", "bm", "p", "q"],
        ],
    );
    let mp = served(&mut b3);
    assert_eq!(text(&items(&mp)[0]), "mp");
    assert_eq!(text(&served(&mut b4)), "q");
    wait_blocked(c, 0);
}

fn workload_two(s: &Server, c: &mut RespConn) {
    run(
        c,
        &[
            &["RPUSH", "l", "after", "checkpoint"],
            &["LPOP", "trim"],
            &["DEL", "bin"],
            &["RPUSH", "new", "n"],
        ],
    );
    let mut b = connect(s);
    block(c, &mut b, &["BRPOPLPUSH", "bq", "bm-dst", "0"], 1);
    run(c, &[&["LPUSH", "bq", "r1", "r2"]]);
    assert_eq!(text(&served(&mut b)), "r1");
}

fn restart(
    server: &mut Server,
    c: &mut RespConn,
    launch: &Launch,
    kill: bool,
) -> (Server, RespConn) {
    if kill {
        server.kill9().unwrap_or_else(|e| panic!("{e}"));
    } else {
        c.send_command(&argv(&["SHUTDOWN"]))
            .unwrap_or_else(|e| panic!("send SHUTDOWN: {e}"));
        let (extra, closed) = c.expect_closed(EXIT_TIMEOUT);
        assert!(closed && extra.is_empty(), "SHUTDOWN replied {extra:?}");
        let st = server
            .wait_exit(EXIT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(st.success(), "SHUTDOWN exited with {st}");
    }
    let s = launch.start().unwrap_or_else(|e| panic!("{e}"));
    let c = connect(&s);
    (s, c)
}

#[test]
fn lists_survive_sigkill_and_shutdown() {
    let dir = TempDir::new("restart-lists").unwrap_or_else(|e| panic!("{e}"));
    let launch = Launch::ferrite("lists")
        .dir(dir.path())
        .args(&["--appendfsync", "always"]);
    let mut s = launch.start().unwrap_or_else(|e| panic!("{e}"));
    let mut c = connect(&s);

    workload_one(&s, &mut c);
    let one = state(&mut c);
    let list = |st: &State, k: &str| st.get(&(0, k.to_string())).map(|v| v.1.clone());
    assert_eq!(list(&one, "chain-dst"), None, "served BLPOP emptied it");
    assert_eq!(
        list(&one, "chain-src").as_deref(),
        Some(&["c2".to_string()][..])
    );
    assert_eq!(
        list(&one, "bm-dst").as_deref(),
        Some(&["q".to_string()][..])
    );
    assert_eq!(list(&one, "mp").as_deref(), Some(&["m3".to_string()][..]));
    assert_eq!(list(&one, "big").map(|l| l.len()), Some(280));
    assert_eq!(list(&one, "chunks").map(|l| l.len()), Some(402));

    let (mut s2, mut c2) = restart(&mut s, &mut c, &launch, true);
    same("after SIGKILL (log replay)", &state(&mut c2), &one);

    let (mut s3, mut c3) = restart(&mut s2, &mut c2, &launch, false);
    same("after SHUTDOWN (checkpoint)", &state(&mut c3), &one);
    let enc = call_str(&mut c3, &["OBJECT", "ENCODING", "l"]);
    assert_eq!(text(&enc), "quicklist");

    workload_two(&s3, &mut c3);
    let two = state(&mut c3);
    assert_eq!(
        list(&two, "bm-dst").as_deref(),
        Some(&["r1".to_string(), "q".to_string()][..])
    );
    let (mut s4, mut c4) = restart(&mut s3, &mut c3, &launch, true);
    same("after checkpoint + log replay", &state(&mut c4), &two);

    let (_s5, mut c5) = restart(&mut s4, &mut c4, &launch, false);
    same("after the second SHUTDOWN", &state(&mut c5), &two);
}
