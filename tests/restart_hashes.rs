//! Hashes survive restarts: from the commit log after SIGKILL, and from the
//! checkpoint SHUTDOWN writes (then more writes replayed on top of it).
//! Listpack hashes keep their insertion order across restarts; tables their
//! pairs; HINCRBYFLOAT results (logged as HSET) their exact digits.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::conn::RespConn;
use common::resp::Node;
use common::server::{Launch, Server, TempDir};
use common::state::{call_str, int, items, text};

const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Per db and key: TYPE, the HGETALL pairs (sorted unless the key's name
/// starts with `lp`, a hash that must keep its order), and whether it has a TTL.
type State = BTreeMap<(usize, String), (String, Vec<(String, String)>, bool)>;

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
            let mut pairs = Vec::new();
            if typ == "hash" {
                let all = call_str(c, &["HGETALL", &k]);
                let flat: Vec<String> = items(&all).iter().map(text).collect();
                pairs = flat
                    .chunks(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect();
                if !k.starts_with("lp") {
                    pairs.sort();
                }
                assert_eq!(int(&call_str(c, &["HLEN", &k])), pairs.len() as i64);
            }
            let ttl = int(&call_str(c, &["PTTL", &k])) > 0;
            out.insert((db, k), (typ, pairs, ttl));
        }
    }
    call_str(c, &["SELECT", "0"]);
    out
}

/// Equal states, or a panic naming the keys that differ.
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

fn workload_one(c: &mut RespConn) {
    run(
        c,
        &[
            &["HSET", "lp", "z", "1", "a", "2", "m", "3"],
            &["HSET", "lp", "a", "20"],
            &["HDEL", "lp", "z"],
            &["HSET", "lp", "z", "back"],
            &["HINCRBY", "lp", "n", "41"],
            &["HINCRBY", "lp", "n", "1"],
            &["HINCRBYFLOAT", "lp", "f", "0.1"],
            &["HINCRBYFLOAT", "lp", "f", "0.2"],
            &["HINCRBYFLOAT", "lp", "g", "12345.678"],
            &["HSETNX", "lp", "a", "ignored"],
            &["HSETNX", "lp", "new", "set"],
            &["HMSET", "lp", "bin", "a\r\nb\0c"],
            &["HSET", "long", "short", "1"],
            &["HSET", "long", "v", &"x".repeat(100)],
            &["HSET", "gone", "a", "1"],
            &["HDEL", "gone", "a"],
            // A time to live survives both the log and a checkpoint.
            &["HSET", "ttl", "a", "1"],
            &["EXPIRE", "ttl", "100000"],
            &["SELECT", "3"],
            &["HSET", "lpdb3", "b", "1", "a", "2"],
            &["SELECT", "0"],
        ],
    );
    for i in 0..300 {
        let (f, v) = (format!("f{i}"), format!("v{i}"));
        ok(&call_str(c, &["HSET", "big", &f, &v]));
    }
    // Back below the limits: still a table, never converted back.
    for i in 0..250 {
        ok(&call_str(c, &["HDEL", "big", &format!("f{i}")]));
    }
}

fn workload_two(c: &mut RespConn) {
    run(
        c,
        &[
            &["HINCRBYFLOAT", "lp", "f", "1e20"],
            &["HDEL", "lp", "m"],
            &["HSET", "lp", "after", "checkpoint"],
            &["HINCRBYFLOAT", "big", "x", "-2.5"],
            &["HSET", "lp2", "q", "1", "p", "2"],
            &["DEL", "long"],
        ],
    );
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
        c.send_command(&common::state::argv(&["SHUTDOWN"]))
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
fn hashes_survive_sigkill_and_shutdown() {
    let dir = TempDir::new("restart-hashes").unwrap_or_else(|e| panic!("{e}"));
    let launch = Launch::ferrite("hashes")
        .dir(dir.path())
        .args(&["--appendfsync", "always"]);
    let mut s = launch.start().unwrap_or_else(|e| panic!("{e}"));
    let mut c = connect(&s);

    workload_one(&mut c);
    let one = state(&mut c);
    assert_eq!(one[&(0, "lp".to_string())].1[0], ("a".into(), "20".into()));
    assert_eq!(
        one[&(0, "lp".to_string())]
            .1
            .iter()
            .find(|p| p.0 == "f")
            .map(|p| p.1.as_str()),
        Some("0.3")
    );

    // SIGKILL: the log is replayed.
    let (mut s2, mut c2) = restart(&mut s, &mut c, &launch, true);
    same("after SIGKILL (log replay)", &state(&mut c2), &one);

    // SHUTDOWN: a checkpoint holds the hashes.
    let (mut s3, mut c3) = restart(&mut s2, &mut c2, &launch, false);
    same("after SHUTDOWN (checkpoint)", &state(&mut c3), &one);

    // More writes on top of the checkpoint, then SIGKILL: checkpoint + log.
    workload_two(&mut c3);
    let two = state(&mut c3);
    let (mut s4, mut c4) = restart(&mut s3, &mut c3, &launch, true);
    same("after checkpoint + log replay", &state(&mut c4), &two);

    // And once more through a checkpoint.
    let (_s5, mut c5) = restart(&mut s4, &mut c4, &launch, false);
    same("after the second SHUTDOWN", &state(&mut c5), &two);
}
