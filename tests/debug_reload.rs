//! DEBUG RELOAD: a checkpoint written and loaded back in place leaves every
//! key of every type as it was (the whole observable state of
//! `common::state::dump`), including a stream larger than the block cache
//! whose stored blocks are evicted; writes go on after it, and a restart
//! (SIGKILL: checkpoint plus log) comes back to the same state.
mod common;

use std::time::{Duration, Instant};

use common::conn::RespConn;
use common::server::{Launch, Server, TempDir};
use common::state::{argv, assert_same_dump, call_str, dump, info_field, int, pipeline, text};

fn connect(s: &Server) -> RespConn {
    s.connect()
        .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail(20)))
}

fn ok(c: &mut RespConn, cmd: &[&str]) {
    let r = call_str(c, cmd);
    assert!(!r.is_error(), "{cmd:?}: {}", r.render());
}

fn start(dir: &TempDir) -> Server {
    Launch::ferrite("reload")
        .dir(dir.path())
        .args(&[
            "--enable-debug-command",
            "yes",
            // Small blocks and a small cache: most stored blocks are evicted.
            "--stream-node-max-entries",
            "10",
            "--block-cache-size",
            "65536",
        ])
        .start()
        .unwrap_or_else(|e| panic!("start: {e}"))
}

/// Every type, in two databases, with TTLs, a consumer group with pending
/// entries, and a stream of 20,000 entries.
fn fill(c: &mut RespConn) {
    for db in ["0", "2"] {
        ok(c, &["SELECT", db]);
        ok(c, &["SET", "str", "hello"]);
        ok(c, &["SET", "num", "12345"]);
        ok(c, &["SET", "ttl", "v", "EX", "1000"]);
        ok(c, &["RPUSH", "list", "a", "b", "c", "1", "2"]);
        ok(c, &["HSET", "hash", "f1", "v1", "f2", "2"]);
        ok(c, &["SADD", "intset", "1", "2", "3"]);
        ok(c, &["SADD", "set", "x", "y", "z"]);
        ok(c, &["ZADD", "zset", "1", "a", "2.5", "b", "-inf", "c"]);
        ok(c, &["EXPIRE", "zset", "5000"]);
        // Values past the compact encodings' limits.
        let big: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
        let mut sadd = vec!["SADD", "bigset"];
        sadd.extend(big.iter().map(String::as_str));
        ok(c, &sadd);
        let mut hset = vec!["HSET".to_string(), "bighash".to_string()];
        for (i, m) in big.iter().enumerate() {
            hset.push(m.clone());
            hset.push(i.to_string());
        }
        let hset: Vec<&str> = hset.iter().map(String::as_str).collect();
        ok(c, &hset);
        let mut zadd = vec!["ZADD".to_string(), "bigzset".to_string()];
        for (i, m) in big.iter().enumerate() {
            zadd.push(i.to_string());
            zadd.push(m.clone());
        }
        let zadd: Vec<&str> = zadd.iter().map(String::as_str).collect();
        ok(c, &zadd);
        ok(c, &["XADD", "small", "1-1", "f", "v"]);
        ok(c, &["XGROUP", "CREATE", "small", "g", "0"]);
        ok(
            c,
            &["XREADGROUP", "GROUP", "g", "alice", "STREAMS", "small", ">"],
        );
    }
    ok(c, &["SELECT", "0"]);
    let cmds: Vec<Vec<Vec<u8>>> = (1..=20_000)
        .map(|i| argv(&["XADD", "big", &format!("{i}-0"), "n", &i.to_string()]))
        .collect();
    for chunk in cmds.chunks(1000) {
        let (replies, err) = pipeline(c, chunk);
        assert!(err.is_none(), "pipeline: {err:?}");
        assert!(replies.iter().all(|r| !r.is_error()));
    }
    ok(c, &["XGROUP", "CREATE", "big", "g", "0"]);
    ok(
        c,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "bob",
            "COUNT",
            "500",
            "STREAMS",
            "big",
            ">",
        ],
    );
    ok(c, &["XACK", "big", "g", "3-0", "5-0"]);
}

/// Wait (bounded) until no checkpoint runs, so that stored blocks can be
/// evicted before the reload.
fn checkpoint_and_wait(c: &mut RespConn) {
    ok(c, &["BGSAVE"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while info_field(c, "persistence", "aof_rewrite_in_progress").as_deref() != Some("0") {
        assert!(Instant::now() < deadline, "checkpoint did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn debug_reload_keeps_every_type_and_restarts_the_same() {
    let dir = TempDir::new("reload").expect("tempdir");
    let mut s = start(&dir);
    let mut c = connect(&s);
    fill(&mut c);
    checkpoint_and_wait(&mut c);
    // Read the big stream once: cached blocks beyond the budget are evicted.
    assert_eq!(int(&call_str(&mut c, &["XLEN", "big"])), 20_000);
    let before = dump(&s, 3);
    let encodings_before: Vec<String> = ["list", "hash", "intset", "set", "zset", "bigset"]
        .iter()
        .map(|k| text(&call_str(&mut c, &["OBJECT", "ENCODING", k])))
        .collect();
    ok(&mut c, &["DEBUG", "RELOAD"]);
    let after = dump(&s, 3);
    assert_same_dump("after DEBUG RELOAD", &before, &after);
    let encodings_after: Vec<String> = ["list", "hash", "intset", "set", "zset", "bigset"]
        .iter()
        .map(|k| text(&call_str(&mut c, &["OBJECT", "ENCODING", k])))
        .collect();
    assert_eq!(encodings_before, encodings_after);
    // A second reload in a row, then writes that build on the reloaded
    // state: the stream's last ID, the group's PEL, a list.
    ok(&mut c, &["DEBUG", "RELOAD"]);
    let r = call_str(&mut c, &["XADD", "big", "*", "n", "x"]);
    assert!(
        text(&r).starts_with(|ch: char| ch.is_ascii_digit()),
        "{}",
        r.render()
    );
    let r = call_str(&mut c, &["XADD", "big", "20000-0", "n", "dup"]);
    assert!(r.is_error(), "an ID at or below the last must be refused");
    ok(&mut c, &["XACK", "big", "g", "7-0"]);
    ok(&mut c, &["RPUSH", "list", "after"]);
    assert_eq!(text(&call_str(&mut c, &["LINDEX", "list", "-1"])), "after");
    let expected = dump(&s, 3);
    drop(c);
    s.kill9().expect("kill");
    let s = start(&dir);
    let restarted = dump(&s, 3);
    assert_same_dump("restart after DEBUG RELOAD", &expected, &restarted);
}

#[test]
fn debug_reload_options_and_refusal() {
    let dir = TempDir::new("reload-opts").expect("tempdir");
    let s = start(&dir);
    let mut c = connect(&s);
    ok(&mut c, &["SET", "k", "v"]);
    let r = call_str(&mut c, &["DEBUG", "RELOAD", "NOSAVE"]);
    assert!(r.is_error(), "{}", r.render());
    assert_eq!(text(&call_str(&mut c, &["GET", "k"])), "v");
    // WATCH is broken by a reload, as by FLUSHALL in Redis.
    ok(&mut c, &["WATCH", "k"]);
    let mut other = connect(&s);
    ok(&mut other, &["DEBUG", "RELOAD"]);
    ok(&mut c, &["MULTI"]);
    ok(&mut c, &["SET", "k", "w"]);
    let r = call_str(&mut c, &["EXEC"]);
    assert!(
        matches!(&r, common::resp::Node::Line { kind: b'*', head } if head == b"-1"),
        "EXEC after a reload of a watched key: {}",
        r.render()
    );
    // Refused when DEBUG is not enabled.
    let dir2 = TempDir::new("reload-off").expect("tempdir");
    let s2 = Launch::ferrite("reload-off")
        .dir(dir2.path())
        .start()
        .unwrap_or_else(|e| panic!("start: {e}"));
    let mut c2 = connect(&s2);
    let r = call_str(&mut c2, &["DEBUG", "RELOAD"]);
    assert!(r.is_error(), "{}", r.render());
}
