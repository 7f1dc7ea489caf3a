//! The end-to-end pattern of a stream-backed agent service, through the
//! `redis` crate against the real binary, as an application writes it:
//!
//! - per message of agent `<id>`: `XADD agent:<id> MAXLEN ~ 1000 * msg ..`,
//!   `SETEX latest:<id> 3600 <msg>` and `PUBLISH agent-events <msg>` in one
//!   pipeline (some agents as a MULTI/EXEC transaction), plus an
//!   `INCR agent:count` (a string key the discovery must tell apart);
//! - a subscriber connection (the crate's pub/sub) receives every message,
//!   in order;
//! - history with `XREVRANGE agent:<id> + - COUNT n`, the busiest agent's
//!   stream trimmed near 1000 entries, `GET latest:<id>` with its TTL;
//! - discovery with `KEYS agent:*` and the crate's SCAN iterator
//!   (`MATCH agent:*`, `TYPE stream`);
//! - then the server is SIGKILLed (commit-log replay) and later shut down
//!   (checkpoint), and after each restart the same reads answer the same
//!   (streams entry for entry, latest values, TTLs still counting down from
//!   the same absolute expiry).
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::server::{Launch, Server, TempDir};

const TIMEOUT: Duration = Duration::from_secs(20);
/// Messages per agent; the first agent sends enough to be trimmed.
const AGENTS: [(&str, usize, bool); 3] =
    [("a1", 1300, false), ("a2", 120, true), ("a3", 40, false)];
const BATCH: usize = 50;

fn connect(s: &Server) -> redis::Connection {
    let url = format!("redis://127.0.0.1:{}/", s.port);
    let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| panic!("client {url}: {e}"));
    let con = client
        .get_connection_with_timeout(TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {url}: {e}\n{}", s.log_tail(20)));
    con.set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("set_read_timeout: {e}"));
    con.set_write_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("set_write_timeout: {e}"));
    con
}

fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, c: &redis::Cmd) -> T {
    c.query(con)
        .unwrap_or_else(|e| panic!("{:?} failed: {e}", c.args_iter().collect::<Vec<_>>()))
}

fn msg(agent: &str, i: usize) -> String {
    format!(
        "{{\"agent\":\"{agent}\",\"seq\":{i},\"text\":\"step {i} of {agent}{}\"}}",
        ".".repeat(i % 17)
    )
}

/// A subscriber thread: subscribes, says so, then collects `n` messages
/// (each read bounded by the timeout).
fn subscriber(
    port: u16,
    n: usize,
    ready: mpsc::Sender<()>,
) -> Result<Vec<(String, String)>, String> {
    let url = format!("redis://127.0.0.1:{port}/");
    let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
    let mut con = client
        .get_connection_with_timeout(TIMEOUT)
        .map_err(|e| e.to_string())?;
    let mut ps = con.as_pubsub();
    ps.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    ps.subscribe("agent-events").map_err(|e| e.to_string())?;
    ready.send(()).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = ps
            .get_message()
            .map_err(|e| format!("after {} messages: {e}", out.len()))?;
        let payload: String = m.get_payload().map_err(|e| e.to_string())?;
        out.push((m.get_channel_name().to_string(), payload));
    }
    Ok(out)
}

type Stream = Vec<(String, Vec<(String, String)>)>;

/// What the reads answer: per agent the whole stream, the last 10 by
/// XREVRANGE, the latest value and TTL; the discovered keys.
#[derive(Debug, PartialEq)]
struct Reads {
    streams: BTreeMap<String, Stream>,
    history: BTreeMap<String, Stream>,
    latest: BTreeMap<String, String>,
    keys: BTreeSet<String>,
    stream_keys: BTreeSet<String>,
    latest_keys: BTreeSet<String>,
    count: i64,
}

fn read_all(con: &mut redis::Connection) -> (Reads, BTreeMap<String, i64>) {
    let mut r = Reads {
        streams: BTreeMap::new(),
        history: BTreeMap::new(),
        latest: BTreeMap::new(),
        keys: BTreeSet::new(),
        stream_keys: BTreeSet::new(),
        latest_keys: BTreeSet::new(),
        count: 0,
    };
    let mut ttls = BTreeMap::new();
    for (id, _, _) in AGENTS {
        let key = format!("agent:{id}");
        let all: Stream = q(con, redis::cmd("XRANGE").arg(&key).arg("-").arg("+"));
        r.streams.insert(id.to_string(), all);
        let hist: Stream = q(
            con,
            redis::cmd("XREVRANGE")
                .arg(&key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(10),
        );
        r.history.insert(id.to_string(), hist);
        let latest: String = q(con, redis::cmd("GET").arg(format!("latest:{id}")));
        r.latest.insert(id.to_string(), latest);
        let ttl: i64 = q(con, redis::cmd("TTL").arg(format!("latest:{id}")));
        ttls.insert(id.to_string(), ttl);
    }
    let keys: Vec<String> = q(con, redis::cmd("KEYS").arg("agent:*"));
    r.keys = keys.into_iter().collect();
    let opts = redis::ScanOptions::default()
        .with_pattern("agent:*")
        .with_type("stream")
        .with_count(2);
    let it: redis::Iter<String> =
        redis::Commands::scan_options(con, opts).unwrap_or_else(|e| panic!("SCAN: {e}"));
    let found: Vec<String> = it
        .take(10_000)
        .map(|k| k.unwrap_or_else(|e| panic!("SCAN page: {e}")))
        .collect();
    r.stream_keys = found.into_iter().collect();
    let it: redis::Iter<String> =
        redis::Commands::scan_match(con, "latest:*").unwrap_or_else(|e| panic!("SCAN: {e}"));
    r.latest_keys = it
        .take(10_000)
        .map(|k| k.unwrap_or_else(|e| panic!("SCAN page: {e}")))
        .collect();
    r.count = q(con, redis::cmd("GET").arg("agent:count"));
    (r, ttls)
}

fn check(r: &Reads, ttls: &BTreeMap<String, i64>, max_ttl: i64, what: &str) {
    let want_keys: BTreeSet<String> = AGENTS
        .iter()
        .map(|(id, _, _)| format!("agent:{id}"))
        .chain(["agent:count".to_string()])
        .collect();
    assert_eq!(r.keys, want_keys, "{what}: KEYS agent:*");
    let want_streams: BTreeSet<String> = AGENTS
        .iter()
        .map(|(id, _, _)| format!("agent:{id}"))
        .collect();
    assert_eq!(
        r.stream_keys, want_streams,
        "{what}: SCAN MATCH agent:* TYPE stream"
    );
    let want_latest: BTreeSet<String> = AGENTS
        .iter()
        .map(|(id, _, _)| format!("latest:{id}"))
        .collect();
    assert_eq!(r.latest_keys, want_latest, "{what}: SCAN MATCH latest:*");
    let total: usize = AGENTS.iter().map(|(_, n, _)| n).sum();
    assert_eq!(r.count, total as i64, "{what}: agent:count");
    for (id, n, _) in AGENTS {
        let all = &r.streams[id];
        // MAXLEN ~ 1000 keeps at least 1000 and removes only whole nodes
        // (100 entries each by default).
        if n <= 1000 {
            assert_eq!(all.len(), n, "{what}: agent:{id} length");
        } else {
            assert!(
                (1000..1100).contains(&all.len()),
                "{what}: agent:{id} has {} entries after MAXLEN ~ 1000",
                all.len()
            );
        }
        // The stream holds the newest messages, in order.
        let first = n - all.len();
        for (j, (_, fields)) in all.iter().enumerate() {
            let want = vec![("msg".to_string(), msg(id, first + j))];
            assert_eq!(fields, &want, "{what}: agent:{id} entry {j}");
        }
        let hist = &r.history[id];
        assert_eq!(hist.len(), 10.min(n), "{what}: XREVRANGE COUNT 10");
        for (j, (eid, fields)) in hist.iter().enumerate() {
            let (want_id, want_fields) = &all[all.len() - 1 - j];
            assert_eq!(
                (eid, fields),
                (want_id, want_fields),
                "{what}: history of {id}"
            );
        }
        assert_eq!(r.latest[id], msg(id, n - 1), "{what}: latest:{id}");
        let ttl = ttls[id];
        assert!(
            ttl > max_ttl - 120 && ttl <= max_ttl,
            "{what}: TTL latest:{id} = {ttl}, expected just under {max_ttl}"
        );
    }
}

fn start(launch: &Launch) -> Server {
    launch.start().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn agent_service_round_trip_and_restarts() {
    let t0 = Instant::now();
    let dir = TempDir::new("agents").unwrap_or_else(|e| panic!("{e}"));
    let launch = Launch::ferrite("agents")
        .dir(dir.path())
        .args(&["--appendfsync", "always"]);
    let mut server = start(&launch);
    let mut con = connect(&server);

    let total: usize = AGENTS.iter().map(|(_, n, _)| n).sum();
    let (ready_tx, ready_rx) = mpsc::channel();
    let port = server.port;
    let sub = std::thread::spawn(move || subscriber(port, total, ready_tx));
    ready_rx
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|e| panic!("the subscriber did not subscribe: {e}"));

    // The agents take turns, a batch of messages at a time, so the events
    // interleave; `sent` is the order the subscriber must see.
    let mut sent: Vec<String> = Vec::new();
    let mut next = vec![0usize; AGENTS.len()];
    while next.iter().zip(AGENTS).any(|(i, (_, n, _))| *i < n) {
        for (a, (id, n, atomic)) in AGENTS.iter().enumerate() {
            let end = (next[a] + BATCH).min(*n);
            if next[a] == end {
                continue;
            }
            let mut pipe = redis::pipe();
            if *atomic {
                pipe.atomic();
            }
            for i in next[a]..end {
                let m = msg(id, i);
                pipe.cmd("XADD")
                    .arg(format!("agent:{id}"))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(1000)
                    .arg("*")
                    .arg("msg")
                    .arg(&m)
                    .cmd("SETEX")
                    .arg(format!("latest:{id}"))
                    .arg(3600)
                    .arg(&m)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg("agent-events")
                    .arg(&m)
                    .cmd("INCR")
                    .arg("agent:count")
                    .ignore();
                sent.push(m);
            }
            let replies: Vec<redis::Value> = pipe
                .query(&mut con)
                .unwrap_or_else(|e| panic!("pipeline of {id}: {e}"));
            assert_eq!(replies.len(), 2 * (end - next[a]), "{replies:?}");
            for pair in replies.chunks(2) {
                let eid: String = redis::from_redis_value(pair[0].clone())
                    .unwrap_or_else(|e| panic!("XADD answered {:?}: {e}", pair[0]));
                assert!(eid.contains('-'), "XADD answered {eid:?}");
                assert_eq!(pair[1], redis::Value::Int(1), "PUBLISH receivers");
            }
            next[a] = end;
        }
    }
    let got = sub
        .join()
        .unwrap_or_else(|_| panic!("subscriber thread panicked"))
        .unwrap_or_else(|e| panic!("subscriber: {e}"));
    assert_eq!(got.len(), sent.len());
    for (i, ((chan, payload), want)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(chan, "agent-events");
        assert_eq!(payload, want, "message {i} out of order or changed");
    }

    let (before, ttls) = read_all(&mut con);
    check(&before, &ttls, 3600, "before restarts");
    let expire_at: BTreeMap<String, i64> = AGENTS
        .iter()
        .map(|(id, _, _)| {
            let at: i64 = q(
                &mut con,
                redis::cmd("EXPIRETIME").arg(format!("latest:{id}")),
            );
            (id.to_string(), at)
        })
        .collect();

    // SIGKILL: everything acknowledged under `always` is replayed from the log.
    server.kill9().unwrap_or_else(|e| panic!("{e}"));
    let mut server = start(&launch);
    let mut con = connect(&server);
    let (after, ttls) = read_all(&mut con);
    assert_eq!(after, before, "after SIGKILL and log replay");
    check(&after, &ttls, 3600, "after SIGKILL");
    for (id, at) in &expire_at {
        let now: i64 = q(
            &mut con,
            redis::cmd("EXPIRETIME").arg(format!("latest:{id}")),
        );
        assert_eq!(now, *at, "latest:{id} expiry moved across the restart");
    }

    // SHUTDOWN: a checkpoint, then the same reads again.
    let r: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query(&mut con);
    assert!(r.is_err(), "SHUTDOWN replied {r:?}");
    server
        .wait_exit(TIMEOUT)
        .unwrap_or_else(|e| panic!("SHUTDOWN: {e}"));
    let server = start(&launch);
    let mut con = connect(&server);
    let (after, ttls) = read_all(&mut con);
    assert_eq!(after, before, "after SHUTDOWN and checkpoint load");
    check(&after, &ttls, 3600, "after SHUTDOWN");
    for (id, at) in &expire_at {
        let now: i64 = q(
            &mut con,
            redis::cmd("EXPIRETIME").arg(format!("latest:{id}")),
        );
        assert_eq!(now, *at, "latest:{id} expiry moved across the checkpoint");
    }
    // The service goes on: a new message after the restarts.
    let id: String = q(
        &mut con,
        redis::cmd("XADD")
            .arg("agent:a3")
            .arg("MAXLEN")
            .arg("~")
            .arg(1000)
            .arg("*")
            .arg("msg")
            .arg("again"),
    );
    let last: Stream = q(
        &mut con,
        redis::cmd("XREVRANGE")
            .arg("agent:a3")
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1),
    );
    assert_eq!(
        last,
        vec![(id, vec![("msg".to_string(), "again".to_string())])]
    );
    println!(
        "agent service: {} messages, {:.1}s",
        sent.len(),
        t0.elapsed().as_secs_f64()
    );
}
