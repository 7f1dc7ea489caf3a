//! Plain client tests with the `redis` crate against Ferrite (a redis-server
//! in self-test mode, `FERRITE_DIFF_SELF=1`): what a real application does.
mod common;

use std::time::{Duration, Instant};

use common::server::{start_ferrite, Server};

const TIMEOUT: Duration = Duration::from_secs(10);

fn server() -> Server {
    start_ferrite().unwrap_or_else(|e| panic!("{e}"))
}

fn url(s: &Server, resp3: bool) -> String {
    if resp3 {
        format!("redis://127.0.0.1:{}/?protocol=resp3", s.port)
    } else {
        format!("redis://127.0.0.1:{}/", s.port)
    }
}

fn connect(s: &Server, resp3: bool) -> redis::Connection {
    let client = redis::Client::open(url(s, resp3))
        .unwrap_or_else(|e| panic!("client for {}: {e}", url(s, resp3)));
    let con = client
        .get_connection_with_timeout(TIMEOUT)
        .unwrap_or_else(|e| {
            panic!(
                "connect to {} (resp3: {resp3}): {e}\n{}",
                url(s, resp3),
                s.log_tail(20)
            )
        });
    con.set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("set_read_timeout: {e}"));
    con.set_write_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("set_write_timeout: {e}"));
    con
}

/// Runs a command, failing with the command and the server error.
fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, c: &redis::Cmd) -> T {
    c.query(con)
        .unwrap_or_else(|e| panic!("{:?} failed: {e}", c.args_iter().collect::<Vec<_>>()))
}

type Entries = Vec<(String, Vec<(String, String)>)>;

#[test]
fn connect_and_ping() {
    let s = server();
    for resp3 in [false, true] {
        let mut con = connect(&s, resp3);
        let pong: String = q(&mut con, &redis::cmd("PING"));
        assert_eq!(pong, "PONG", "resp3: {resp3}");
        let echo: Vec<u8> = q(&mut con, redis::cmd("ECHO").arg(b"bin\x00ary".as_slice()));
        assert_eq!(echo, b"bin\x00ary", "resp3: {resp3}");
        let err = redis::cmd("NOSUCHCOMMAND")
            .arg("x")
            .query::<redis::Value>(&mut con);
        let msg = format!("{err:?}");
        assert!(err.is_err(), "unknown command must fail, got {msg}");
        assert!(
            msg.contains("unknown command"),
            "unexpected error for an unknown command: {msg}"
        );
    }
}

#[test]
fn xadd_xrange_round_trip() {
    let s = server();
    let mut con = connect(&s, false);
    let id: String = q(
        &mut con,
        redis::cmd("XADD")
            .arg("s")
            .arg("1-1")
            .arg("name")
            .arg("ferrite")
            .arg("n")
            .arg("1"),
    );
    assert_eq!(id, "1-1");
    let auto: String = q(
        &mut con,
        redis::cmd("XADD").arg("s").arg("*").arg("name").arg("auto"),
    );
    let (ms, seq) = auto
        .split_once('-')
        .unwrap_or_else(|| panic!("XADD * returned {auto:?}, not an ID"));
    assert!(
        ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok(),
        "XADD * returned {auto:?}"
    );
    let len: i64 = q(&mut con, redis::cmd("XLEN").arg("s"));
    assert_eq!(len, 2);
    let entries: Entries = q(&mut con, redis::cmd("XRANGE").arg("s").arg("-").arg("+"));
    assert_eq!(
        entries,
        vec![
            (
                "1-1".to_string(),
                vec![("name".into(), "ferrite".into()), ("n".into(), "1".into())]
            ),
            (auto.clone(), vec![("name".into(), "auto".into())]),
        ]
    );
    let rev: Entries = q(
        &mut con,
        redis::cmd("XREVRANGE")
            .arg("s")
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1),
    );
    assert_eq!(rev.len(), 1);
    assert_eq!(rev[0].0, auto);
    // RESP3 gives the same entries.
    let mut con3 = connect(&s, true);
    let entries3: Entries = q(&mut con3, redis::cmd("XRANGE").arg("s").arg("-").arg("+"));
    assert_eq!(entries3, entries);
    let err = redis::cmd("XADD")
        .arg("s")
        .arg("1-1")
        .arg("f")
        .arg("v")
        .query::<String>(&mut con);
    let msg = format!("{err:?}");
    assert!(
        msg.contains("equal or smaller than the target stream top item"),
        "XADD with a smaller ID must fail with Redis's message, got {msg}"
    );
}

#[test]
fn pipeline() {
    let s = server();
    let mut con = connect(&s, false);
    let mut p = redis::pipe();
    for i in 1..=200 {
        p.cmd("XADD").arg("p").arg(format!("{i}-0")).arg("i").arg(i);
    }
    p.cmd("XLEN").arg("p");
    let replies: Vec<redis::Value> = p
        .query(&mut con)
        .unwrap_or_else(|e| panic!("pipeline failed: {e}"));
    assert_eq!(replies.len(), 201);
    assert!(
        matches!(&replies[0], redis::Value::BulkString(b) if b == b"1-0"),
        "first reply: {:?}",
        replies[0]
    );
    assert!(
        matches!(&replies[200], redis::Value::Int(200)),
        "XLEN reply: {:?}",
        replies[200]
    );
    // An atomic pipeline (MULTI/EXEC).
    let (a, b, len): (String, String, i64) = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg("p")
        .arg("1000-0")
        .arg("f")
        .arg("v")
        .cmd("XADD")
        .arg("p")
        .arg("1000-*")
        .arg("f")
        .arg("v")
        .cmd("XLEN")
        .arg("p")
        .query(&mut con)
        .unwrap_or_else(|e| panic!("MULTI/EXEC pipeline failed: {e}"));
    assert_eq!((a.as_str(), b.as_str(), len), ("1000-0", "1000-1", 202));
}

#[test]
fn async_blocking_xread_woken_by_xadd() {
    let s = server();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    let url = url(&s, false);
    rt.block_on(async move {
        let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| panic!("client: {e}"));
        let mut reader = tokio::time::timeout(TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .unwrap_or_else(|_| panic!("async connect timed out"))
            .unwrap_or_else(|e| panic!("async connect: {e}"));
        let mut writer = tokio::time::timeout(TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .unwrap_or_else(|_| panic!("async connect timed out"))
            .unwrap_or_else(|e| panic!("async connect: {e}"));
        let _: String = redis::cmd("XADD")
            .arg("s")
            .arg("1-1")
            .arg("f")
            .arg("v")
            .query_async(&mut writer)
            .await
            .unwrap_or_else(|e| panic!("XADD: {e}"));
        let read = tokio::spawn(async move {
            redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(0)
                .arg("STREAMS")
                .arg("s")
                .arg("$")
                .query_async::<redis::Value>(&mut reader)
                .await
        });
        // Wait (bounded) until the server reports the reader as blocked.
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let info: String = redis::cmd("INFO")
                .arg("clients")
                .query_async(&mut writer)
                .await
                .unwrap_or_else(|e| panic!("INFO clients: {e}"));
            if info.lines().any(|l| l.trim() == "blocked_clients:1") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the XREAD never blocked; INFO clients:\n{info}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let id: String = redis::cmd("XADD")
            .arg("s")
            .arg("2-1")
            .arg("k")
            .arg("w")
            .query_async(&mut writer)
            .await
            .unwrap_or_else(|e| panic!("XADD: {e}"));
        assert_eq!(id, "2-1");
        let got = tokio::time::timeout(TIMEOUT, read)
            .await
            .unwrap_or_else(|_| panic!("the blocked XREAD was not woken by XADD"))
            .unwrap_or_else(|e| panic!("reader task: {e}"))
            .unwrap_or_else(|e| panic!("XREAD: {e}"));
        let expected = redis::Value::Array(vec![redis::Value::Array(vec![
            redis::Value::BulkString(b"s".to_vec()),
            redis::Value::Array(vec![redis::Value::Array(vec![
                redis::Value::BulkString(b"2-1".to_vec()),
                redis::Value::Array(vec![
                    redis::Value::BulkString(b"k".to_vec()),
                    redis::Value::BulkString(b"w".to_vec()),
                ]),
            ])]),
        ])]);
        assert_eq!(got, expected);
    });
}
