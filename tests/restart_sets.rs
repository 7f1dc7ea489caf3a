//! Sets and sorted sets survive restarts: from the commit log after
//! SIGKILL, and from the checkpoint SHUTDOWN writes (then more writes
//! replayed on top of it). SPOP's random choices replay as what happened
//! (the popped members stay gone, the rest stay); ZINCRBY/ZADD INCR scores
//! come back bit-identical (compared as the 17-digit text Redis prints);
//! encodings (intset/hashtable, listpack/skiplist) are kept.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::conn::RespConn;
use common::resp::Node;
use common::server::{Launch, Server, TempDir};
use common::state::{call_str, int, items, text};

const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Per db and key: TYPE, OBJECT ENCODING, the members (sets sorted;
/// sorted sets in order with scores), and whether it has a TTL.
type State = BTreeMap<(usize, String), (String, String, Vec<String>, bool)>;

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
            let enc = text(&call_str(c, &["OBJECT", "ENCODING", &k]));
            let mut members = Vec::new();
            if typ == "set" {
                members = items(&call_str(c, &["SMEMBERS", &k]))
                    .iter()
                    .map(text)
                    .collect();
                members.sort();
                assert_eq!(int(&call_str(c, &["SCARD", &k])), members.len() as i64);
            } else if typ == "zset" {
                members = items(&call_str(c, &["ZRANGE", &k, "0", "-1", "WITHSCORES"]))
                    .iter()
                    .map(text)
                    .collect();
            }
            let ttl = int(&call_str(c, &["PTTL", &k])) > 0;
            out.insert((db, k), (typ, enc, members, ttl));
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

/// SPOPs whose replies are returned: after a restart, none of these may
/// be back.
fn workload_one(c: &mut RespConn) -> Vec<(String, String)> {
    run(
        c,
        &[
            &["SADD", "ints", "3", "1", "2", "10", "-7"],
            &["SADD", "strs", "a", "b", "c", "d", "e", "f"],
            &[
                "SADD",
                "wide",
                "5",
                "-9223372036854775808",
                "9223372036854775807",
            ],
            &["SADD", "wide", "70000", "-32769"],
            &["SADD", "longm", "s", &"y".repeat(65)],
            &["SADD", "gone", "x"],
            &["SREM", "gone", "x"],
            &["SADD", "ttl", "a"],
            &["EXPIRE", "ttl", "100000"],
            &["SUNIONSTORE", "u", "ints", "strs"],
            &["SINTERSTORE", "i", "ints", "ints"],
            &["SMOVE", "strs", "moved", "a"],
            &["ZADD", "lp", "1", "a", "2", "b", "-0", "z", "inf", "top"],
            &["ZADD", "sk", "5", &"x".repeat(70)],
            &["ZADD", "sk", "-0", "negzero", "1e20", "big"],
            &["ZADD", "lp", "GT", "CH", "3", "a"],
            &["ZREM", "lp", "b"],
            &["SELECT", "3"],
            &["ZADD", "db3", "1", "one"],
            &["SADD", "sdb3", "m"],
            &["SELECT", "0"],
        ],
    );
    for _ in 0..30 {
        ok(&call_str(c, &["ZINCRBY", "lp", "0.1", "f"]));
        ok(&call_str(c, &["ZADD", "sk", "INCR", "0.7", "g"]));
    }
    for i in 0..600 {
        ok(&call_str(c, &["SADD", "bigset", &i.to_string()]));
    }
    // Past the 128-member listpack limit.
    for i in 0..130 {
        ok(&call_str(c, &["SADD", "many", &format!("s{i}")]));
    }
    for i in 0..200 {
        let (s, m) = (format!("{}", i as f64 / 3.0), format!("m{i}"));
        ok(&call_str(c, &["ZADD", "bigz", &s, &m]));
    }
    ok(&call_str(c, &["ZREMRANGEBYRANK", "bigz", "0", "150"]));
    let mut popped = Vec::new();
    for cmd in [
        &["SPOP", "strs"][..],
        &["SPOP", "bigset", "250"],
        &["SPOP", "ints", "2"],
        &["SPOP", "u", "100"],
    ] {
        let r = call_str(c, cmd);
        ok(&r);
        let key = cmd[1].to_string();
        match &r {
            Node::Agg { .. } => popped.extend(items(&r).iter().map(|m| (key.clone(), text(m)))),
            other => popped.push((key, text(other))),
        }
    }
    ok(&call_str(c, &["ZPOPMIN", "bigz", "3"]));
    ok(&call_str(c, &["BZPOPMAX", "bigz", "0"]));
    popped
}

fn workload_two(c: &mut RespConn) {
    run(
        c,
        &[
            &["SPOP", "bigset", "10"],
            &["SADD", "ints", "99"],
            &["ZINCRBY", "lp", "0.3", "f"],
            &["ZPOPMAX", "sk"],
            &["SDIFFSTORE", "d", "bigset", "ints"],
            &["DEL", "i"],
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
fn sets_and_zsets_survive_sigkill_and_shutdown() {
    let dir = TempDir::new("restart-sets").unwrap_or_else(|e| panic!("{e}"));
    let launch = Launch::ferrite("sets")
        .dir(dir.path())
        .args(&["--appendfsync", "always"]);
    let mut s = launch.start().unwrap_or_else(|e| panic!("{e}"));
    let mut c = connect(&s);

    let popped = workload_one(&mut c);
    let one = state(&mut c);
    assert_eq!(one[&(0, "bigset".to_string())].1, "hashtable");
    assert_eq!(one[&(0, "ints".to_string())].1, "intset");
    assert_eq!(one[&(0, "lp".to_string())].1, "listpack");
    assert_eq!(one[&(0, "sk".to_string())].1, "skiplist");
    assert_eq!(one[&(0, "bigset".to_string())].2.len(), 350);

    let (mut s2, mut c2) = restart(&mut s, &mut c, &launch, true);
    let after = state(&mut c2);
    same("after SIGKILL (log replay)", &after, &one);
    // `u` (the union of 5 + 6 members) is popped whole.
    assert_eq!(popped.len(), 1 + 250 + 2 + 11);
    for (key, m) in &popped {
        let found = after
            .get(&(0, key.clone()))
            .is_some_and(|(_, _, members, _)| members.contains(m));
        assert!(!found, "{key}: popped member {m} came back after replay");
    }

    let (mut s3, mut c3) = restart(&mut s2, &mut c2, &launch, false);
    same("after SHUTDOWN (checkpoint)", &state(&mut c3), &one);

    workload_two(&mut c3);
    let two = state(&mut c3);
    let (mut s4, mut c4) = restart(&mut s3, &mut c3, &launch, true);
    same("after checkpoint + log replay", &state(&mut c4), &two);

    let (_s5, mut c5) = restart(&mut s4, &mut c4, &launch, false);
    same("after the second SHUTDOWN", &state(&mut c5), &two);
}
