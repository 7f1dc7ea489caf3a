//! Strings across restarts: every string command's effect, and times to
//! live, survive a SIGKILL (the commit log is replayed) and a SHUTDOWN (the
//! checkpoint is loaded). A key whose time passed while the server was down
//! is gone after the restart, and replaying the log never brings one back
//! (relative times are logged as absolute ones). Also the application
//! pattern `SETEX latest:<agent> 3600 <msg>` through the `redis` crate.
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::conn::RespConn;
use common::server::{Launch, Server, TempDir};
use common::state::{call, call_str, int, loaded_line, text};

const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn start(launch: &Launch) -> Server {
    launch.start().unwrap_or_else(|e| panic!("{e}"))
}

fn connect(s: &Server) -> RespConn {
    s.connect()
        .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail(20)))
}

fn launch(tag: &str, dir: &TempDir) -> Launch {
    Launch::ferrite(tag)
        .dir(dir.path())
        .args(&["--appendfsync", "always"])
}

/// A command that must succeed; its reply rendered.
fn w(c: &mut RespConn, parts: &[&str]) -> String {
    let n = call_str(c, parts);
    assert!(!n.is_error(), "{parts:?} -> {}", n.render());
    n.render()
}

/// Per key: TYPE, the value (GET for strings) and PEXPIRETIME, rendered.
fn snapshot(c: &mut RespConn, keys: &[&str]) -> Vec<(String, String, String, String)> {
    keys.iter()
        .map(|k| {
            let ty = text(&call_str(c, &["TYPE", k]));
            let val = if ty == "string" {
                call_str(c, &["GET", k]).render().trim_end().to_string()
            } else {
                String::new()
            };
            let when = int(&call_str(c, &["PEXPIRETIME", k])).to_string();
            (k.to_string(), ty, val, when)
        })
        .collect()
}

fn stop_kill(s: &mut Server) {
    s.kill9().unwrap_or_else(|e| panic!("kill: {e}"));
}

fn stop_shutdown(s: &mut Server, c: &mut RespConn) {
    c.send_command(&common::state::argv(&["SHUTDOWN"]))
        .unwrap_or_else(|e| panic!("send SHUTDOWN: {e}"));
    let (extra, closed) = c.expect_closed(EXIT_TIMEOUT);
    assert!(closed && extra.is_empty(), "SHUTDOWN replied {extra:?}");
    s.wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|e| panic!("wait for exit: {e}"));
}

fn assert_clean_load(s: &Server) {
    let loaded =
        loaded_line(&s.log_text()).unwrap_or_else(|| panic!("no load line in\n{}", s.log_tail(30)));
    assert_eq!(loaded.replay_errors, 0, "{}", s.log_tail(30));
}

const KEYS: &[&str] = &[
    "plain", "ex", "px", "exat", "pxat", "setex", "psetex", "kt", "ctr", "fl", "flt", "ap", "sr",
    "m1", "m2", "m3", "gs", "gd", "ge", "gp", "gat", "nx", "bin", "s",
];

fn write_everything(c: &mut RespConn) {
    let later_s = (now_ms() / 1000 + 100_000).to_string();
    let later_ms = (now_ms() + 100_000_000).to_string();
    w(c, &["SET", "plain", "v"]);
    w(c, &["SET", "ex", "v", "EX", "1000"]);
    w(c, &["SET", "px", "v", "PX", "1000000"]);
    w(c, &["SET", "exat", "v", "EXAT", &later_s]);
    w(c, &["SET", "pxat", "v", "PXAT", &later_ms]);
    w(c, &["SETEX", "setex", "1000", "v"]);
    w(c, &["PSETEX", "psetex", "1000000", "v"]);
    w(c, &["SET", "kt", "v", "EX", "1000"]);
    w(c, &["SET", "kt", "v2", "KEEPTTL"]);
    w(c, &["INCR", "ctr"]);
    w(c, &["INCR", "ctr"]);
    w(c, &["INCRBY", "ctr", "10"]);
    w(c, &["DECRBY", "ctr", "2"]);
    w(c, &["DECR", "ctr"]);
    w(c, &["INCRBYFLOAT", "fl", "10.5"]);
    w(c, &["INCRBYFLOAT", "fl", "0.1"]);
    w(c, &["INCRBYFLOAT", "fl", "1e-3"]);
    w(c, &["SET", "flt", "1", "EX", "1000"]);
    w(c, &["INCRBYFLOAT", "flt", "2.5"]);
    w(c, &["APPEND", "ap", "hello"]);
    w(c, &["APPEND", "ap", " world"]);
    w(c, &["SETRANGE", "sr", "5", "x"]);
    w(c, &["SETRANGE", "ap", "0", "J"]);
    w(c, &["MSET", "m1", "a", "m2", "b"]);
    w(c, &["MSETNX", "m3", "c"]);
    w(c, &["SET", "gs", "old", "EX", "1000"]);
    w(c, &["GETSET", "gs", "new"]);
    w(c, &["SET", "gd", "v"]);
    w(c, &["GETDEL", "gd"]);
    w(c, &["SET", "ge", "v"]);
    w(c, &["GETEX", "ge", "EX", "1000"]);
    w(c, &["SET", "gp", "v", "EX", "1000"]);
    w(c, &["GETEX", "gp", "PERSIST"]);
    w(c, &["SET", "gat", "v"]);
    w(c, &["GETEX", "gat", "PXAT", &later_ms]);
    w(c, &["SET", "nx", "v", "NX", "GET"]);
    w(c, &["SET", "nx", "v2", "NX"]);
    let n = call(
        c,
        &[b"SET".to_vec(), b"bin".to_vec(), b"\x00\xff\r\n".to_vec()],
    );
    assert!(!n.is_error());
    w(c, &["XADD", "s", "1-1", "f", "v"]);
    w(c, &["SET", "s", "now a string", "PX", "1000000"]);
}

#[test]
fn strings_and_their_times_survive_kill_and_shutdown() {
    let dir = TempDir::new("rs-strings").unwrap_or_else(|e| panic!("{e}"));
    let l = launch("strings", &dir);
    let mut s = start(&l);
    let mut c = connect(&s);
    write_everything(&mut c);
    let before = snapshot(&mut c, KEYS);
    // Spot checks that the state is the intended one.
    let get = |snap: &[(String, String, String, String)], k: &str| {
        snap.iter()
            .find(|e| e.0 == k)
            .map(|e| (e.2.clone(), e.3.clone()))
            .unwrap_or_default()
    };
    assert_eq!(get(&before, "fl").0, "\"10.601\"");
    assert_eq!(get(&before, "flt").0, "\"3.5\"");
    assert_ne!(get(&before, "flt").1, "-1");
    assert_eq!(get(&before, "kt").0, "\"v2\"");
    assert_ne!(get(&before, "kt").1, "-1");
    assert_eq!(get(&before, "gs").1, "-1");
    assert_eq!(get(&before, "gp").1, "-1");
    assert_eq!(get(&before, "gd").1, "-2");
    assert_eq!(get(&before, "ctr").0, "\"9\"");

    for round in 0..2 {
        stop_kill(&mut s);
        s = start(&l);
        assert_clean_load(&s);
        c = connect(&s);
        assert_eq!(snapshot(&mut c, KEYS), before, "after SIGKILL {round}");
        stop_shutdown(&mut s, &mut c);
        s = start(&l);
        assert_clean_load(&s);
        c = connect(&s);
        assert_eq!(snapshot(&mut c, KEYS), before, "after SHUTDOWN {round}");
    }
}

/// Sleep until the wall clock is past `deadline_ms` (waiting for time to
/// pass, not for another thread: bounded by the deadline itself).
fn wait_until(deadline_ms: u64) {
    while now_ms() <= deadline_ms {
        std::thread::sleep(Duration::from_millis(
            (deadline_ms + 1).saturating_sub(now_ms()).min(100),
        ));
    }
}

#[test]
fn keys_that_expired_while_down_stay_gone() {
    const SHORT: &[&str] = &["px", "setex", "psetex", "getex", "kt", "flt", "lazy"];
    for stop in ["kill", "shutdown"] {
        let dir = TempDir::new("rs-strings-ttl").unwrap_or_else(|e| panic!("{e}"));
        let l = launch("strings-ttl", &dir);
        let mut s = start(&l);
        let mut c = connect(&s);
        w(&mut c, &["SET", "lazy", "v", "PX", "50"]);
        let lazy_at = int(&call_str(&mut c, &["PEXPIRETIME", "lazy"]));
        w(&mut c, &["SET", "px", "v", "PX", "1500"]);
        w(&mut c, &["SETEX", "setex", "1", "v"]);
        w(&mut c, &["PSETEX", "psetex", "1500", "v"]);
        w(&mut c, &["SET", "getex", "v"]);
        w(&mut c, &["GETEX", "getex", "PX", "1500"]);
        w(&mut c, &["SET", "kt", "v", "PX", "1500"]);
        w(&mut c, &["SET", "kt", "v2", "KEEPTTL"]);
        w(&mut c, &["SET", "flt", "1", "PX", "1500"]);
        w(&mut c, &["INCRBYFLOAT", "flt", "0.5"]);
        w(&mut c, &["SET", "stays", "v", "EX", "1000"]);
        w(&mut c, &["SET", "forever", "v"]);
        // "lazy" expires while the server runs and is deleted by a read.
        wait_until(lazy_at as u64);
        assert_eq!(
            call_str(&mut c, &["GET", "lazy"]).render().trim_end(),
            "(nil bulk $-1)"
        );
        let mut latest = 0;
        for k in SHORT {
            let when = int(&call_str(&mut c, &["PEXPIRETIME", k]));
            assert!(when > 0 || *k == "lazy", "{k}: {when}");
            latest = latest.max(when);
        }
        match stop {
            "kill" => stop_kill(&mut s),
            _ => stop_shutdown(&mut s, &mut c),
        }
        // Down until every short time has passed.
        wait_until(latest as u64);
        s = start(&l);
        assert_clean_load(&s);
        c = connect(&s);
        for k in SHORT {
            assert_eq!(int(&call_str(&mut c, &["EXISTS", k])), 0, "{k} ({stop})");
            assert_eq!(int(&call_str(&mut c, &["TTL", k])), -2, "{k} ({stop})");
        }
        assert_eq!(text(&call_str(&mut c, &["GET", "stays"])), "v");
        assert!(int(&call_str(&mut c, &["TTL", "stays"])) > 900);
        assert_eq!(int(&call_str(&mut c, &["TTL", "forever"])), -1);
        // Replaying the log again (after a kill) resurrects nothing.
        stop_kill(&mut s);
        s = start(&l);
        assert_clean_load(&s);
        c = connect(&s);
        for k in SHORT {
            assert_eq!(
                int(&call_str(&mut c, &["EXISTS", k])),
                0,
                "{k} ({stop}, again)"
            );
        }
        assert_eq!(int(&call_str(&mut c, &["DBSIZE"])), 2, "({stop})");
        drop(c);
        drop(s);
    }
}

fn redis_con(s: &Server) -> redis::Connection {
    let url = format!("redis://127.0.0.1:{}/", s.port);
    let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| panic!("{url}: {e}"));
    let con = client
        .get_connection_with_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {url}: {e}\n{}", s.log_tail(20)));
    con.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    con
}

#[test]
fn setex_latest_message_per_agent_through_the_redis_crate() {
    use redis::Commands;
    let dir = TempDir::new("rs-strings-app").unwrap_or_else(|e| panic!("{e}"));
    let l = launch("strings-app", &dir);
    let mut s = start(&l);
    let mut con = redis_con(&s);
    let q = |con: &mut redis::Connection, c: &redis::Cmd| -> redis::Value {
        c.query(con).unwrap_or_else(|e| panic!("{c:?}: {e}"))
    };
    for agent in ["agent-1", "agent-2"] {
        let key = format!("latest:{agent}");
        let ok = q(
            &mut con,
            redis::cmd("SETEX")
                .arg(&key)
                .arg(3600)
                .arg(format!("hello from {agent}")),
        );
        assert_eq!(ok, redis::Value::Okay);
    }
    // The typed API sends the same command.
    let () = con
        .set_ex("latest:agent-3", "third", 3600)
        .unwrap_or_else(|e| panic!("set_ex: {e}"));
    let () = con
        .set_ex("latest:agent-1", "newer", 3600)
        .unwrap_or_else(|e| panic!("set_ex: {e}"));
    let check = |con: &mut redis::Connection| {
        let v: Option<String> = con.get("latest:agent-1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.as_deref(), Some("newer"));
        let v: Option<String> = con.get("latest:agent-2").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.as_deref(), Some("hello from agent-2"));
        let v: Vec<Option<String>> = con
            .mget(&["latest:agent-3", "latest:nobody"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v, vec![Some("third".to_string()), None]);
        for a in 1..=3 {
            let ttl: i64 = con
                .ttl(format!("latest:agent-{a}"))
                .unwrap_or_else(|e| panic!("{e}"));
            assert!((3500..=3600).contains(&ttl), "agent-{a}: ttl {ttl}");
        }
    };
    check(&mut con);
    drop(con);
    stop_kill(&mut s);
    s = start(&l);
    assert_clean_load(&s);
    let mut con = redis_con(&s);
    check(&mut con);
}
