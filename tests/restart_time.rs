//! Restart-time measurement (docs/storage.md, "Measured"). Ignored by
//! default; it asserts nothing about time (only that the data came back):
//!
//! ```sh
//! cargo test --release --test restart_time -- --ignored --nocapture
//! FERRITE_MEASURE_ENTRIES=10000000 cargo test --release --test restart_time -- --ignored --nocapture
//! ```
//!
//! For N entries of `symbol BTC price 42000.5 volume 3` added with pipelined
//! `XADD bench *` (batches of 10,000), it reports the time from spawning the
//! process to the first `+PONG` (connect and PING polled every millisecond;
//! a Redis `-LOADING` reply counts as not ready):
//!
//! - ferrite, clean SHUTDOWN, restart: loads the checkpoint written at exit;
//! - ferrite, SIGKILL with checkpoints off (`--auto-checkpoint-min-size
//!   1000gb`), restart: replays all N records;
//! - ferrite, SIGKILL with the default checkpoint threshold (64mb), restart:
//!   the last checkpoint plus the records after it;
//! - redis-server 7.0, `appendonly yes`, no AOF rewrite, SIGKILL, restart:
//!   replays N XADD commands from the AOF;
//! - redis-server 7.0 after BGREWRITEAOF (RDB preamble), SHUTDOWN, restart.
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{
    ferrite_path, redis_server_path, Kind, Launch, TempDir, REDIS_DETERMINISTIC_ARGS,
};
use common::state::{call_str, int, REPLY_TIMEOUT};

const BATCH: usize = 10_000;
const READY_TIMEOUT: Duration = Duration::from_secs(1800);

fn entries() -> usize {
    std::env::var("FERRITE_MEASURE_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// A spawned server, killed on drop (also when the measurement panics).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` and polls connect + PING every millisecond until `+PONG`.
fn time_to_pong(mut cmd: Command, port: u16, log: &Path) -> (Proc, Duration) {
    let logf = std::fs::File::create(log).unwrap_or_else(|e| panic!("{e}"));
    let logf2 = logf.try_clone().unwrap_or_else(|e| panic!("{e}"));
    cmd.stdin(Stdio::null()).stdout(logf).stderr(logf2);
    let started = Instant::now();
    let mut child = Proc(cmd.spawn().unwrap_or_else(|e| panic!("spawn: {e}")));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        assert!(started.elapsed() < READY_TIMEOUT, "not ready in time");
        if let Ok(Some(st)) = child.0.try_wait() {
            panic!(
                "server exited ({st}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            s.set_read_timeout(Some(READY_TIMEOUT)).ok();
            if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok() {
                let mut b = [0u8; 256];
                if let Ok(n) = s.read(&mut b) {
                    if b[..n].starts_with(b"+PONG") {
                        return (child, started.elapsed());
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            if m.is_dir() {
                total += dir_bytes(&e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

fn mb(b: u64) -> String {
    format!("{:.0} MB", b as f64 / 1e6)
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    l.local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ferrite_cmd(dir: &Path, port: u16, extra: &[&str]) -> Command {
    let mut c = Command::new(ferrite_path());
    c.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(dir)
        .args(extra);
    c
}

fn redis_cmd(dir: &Path, port: u16, extra: &[&str]) -> Command {
    let mut c = Command::new(redis_server_path().unwrap_or_else(|e| panic!("{e}")));
    c.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(dir)
        .args(REDIS_DETERMINISTIC_ARGS)
        .args(extra);
    c
}

fn xlen(port: u16) -> i64 {
    let mut c = common::conn::RespConn::connect(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    int(&call_str(&mut c, &["XLEN", "bench"]))
}

fn shutdown(port: u16, child: &mut Proc) -> Duration {
    let t = Instant::now();
    let mut c = common::conn::RespConn::connect(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    c.send_command(&common::state::argv(&["SHUTDOWN"])).ok();
    let _ = c.expect_closed(READY_TIMEOUT);
    let st = child.0.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(st.success(), "shutdown exit status {st}");
    t.elapsed()
}

fn kill(child: &mut Proc) {
    let _ = child.0.kill();
    let _ = child.0.wait();
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Ferrite: load, then `stop` (clean or kill) and time the restart.
fn ferrite_case(n: usize, label: &str, extra: &[&str], clean: bool) {
    let dir = TempDir::new("measure-ferrite").unwrap_or_else(|e| panic!("{e}"));
    let mut args = vec!["--appendfsync", "everysec"];
    args.extend_from_slice(extra);
    let mut s = Launch::new(Kind::Ferrite, "ferrite")
        .dir(dir.path())
        .args(&args)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let load_t = load_addr(s.addr(), n);
    let mut stop_t = Duration::ZERO;
    if clean {
        let mut c = s.connect().unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        c.send_command(&common::state::argv(&["SHUTDOWN"])).ok();
        let _ = c.expect_closed(READY_TIMEOUT);
        s.wait_exit(READY_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        stop_t = t.elapsed();
    } else {
        s.kill9().unwrap_or_else(|e| panic!("{e}"));
    }
    let disk = dir_bytes(&dir.path().join("log")) + dir_bytes(&dir.path().join("streams"));
    let port = free_port();
    let (mut child, t) = time_to_pong(
        ferrite_cmd(dir.path(), port, &args),
        port,
        &dir.path().join("measure.log"),
    );
    let got = xlen(port);
    assert_eq!(got as usize, n, "entries after restart");
    let out = std::fs::read_to_string(dir.path().join("measure.log")).unwrap_or_default();
    let loaded = common::state::loaded_line(&out).unwrap_or_default();
    println!(
        "| ferrite | {n} | {label} | {} | {} | {} | {} | checkpoint_seq={} records={} |",
        secs(load_t),
        if clean {
            secs(stop_t)
        } else {
            "kill -9".into()
        },
        mb(disk),
        secs(t),
        loaded.checkpoint_seq,
        loaded.records
    );
    kill(&mut child);
}

/// Redis 7.0 with an AOF: load, optionally BGREWRITEAOF, stop, restart.
fn redis_case(n: usize, label: &str, rewrite: bool) {
    let dir = TempDir::new("measure-redis").unwrap_or_else(|e| panic!("{e}"));
    let extra = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--auto-aof-rewrite-percentage",
        "0",
    ];
    let port = free_port();
    let (mut child, _) = time_to_pong(
        redis_cmd(dir.path(), port, &extra),
        port,
        &dir.path().join("load.log"),
    );
    let s_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let load_t = load_addr(s_addr, n);
    let mut c = common::conn::RespConn::connect(s_addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    if rewrite {
        call_str(&mut c, &["BGREWRITEAOF"]);
        // Bounded wait for the rewrite to finish.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let v = common::state::info_field(&mut c, "persistence", "aof_rewrite_in_progress");
            let sched = common::state::info_field(&mut c, "persistence", "aof_rewrite_scheduled");
            if v.as_deref() == Some("0") && sched.as_deref() == Some("0") {
                break;
            }
            assert!(Instant::now() < deadline, "BGREWRITEAOF did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let stop_t = if rewrite {
        shutdown(port, &mut child)
    } else {
        kill(&mut child);
        Duration::ZERO
    };
    let disk = dir_bytes(&dir.path().join("appendonlydir"));
    let port2 = free_port();
    let (mut child2, t) = time_to_pong(
        redis_cmd(dir.path(), port2, &extra),
        port2,
        &dir.path().join("restart.log"),
    );
    assert_eq!(xlen(port2) as usize, n, "entries after restart");
    println!(
        "| redis 7.0 | {n} | {label} | {} | {} | {} | {} | |",
        secs(load_t),
        if rewrite {
            secs(stop_t)
        } else {
            "kill -9".into()
        },
        mb(disk),
        secs(t)
    );
    kill(&mut child2);
}

/// Pipelined XADDs (batches of `BATCH`); returns the elapsed time. Each
/// reply is one bulk ID (`$N\r\n<id>\r\n`): two lines per reply. An error
/// reply would stall the count (and fail on the read timeout); XLEN is
/// checked after the restart anyway.
fn load_addr(addr: SocketAddr, n: usize) -> Duration {
    let mut sock = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    sock.set_read_timeout(Some(REPLY_TIMEOUT)).ok();
    load_on(&mut sock, n)
}

fn load_on(sock: &mut TcpStream, n: usize) -> Duration {
    let cmd = b"*9\r\n$4\r\nXADD\r\n$5\r\nbench\r\n$1\r\n*\r\n$6\r\nsymbol\r\n$3\r\nBTC\r\n\
$5\r\nprice\r\n$7\r\n42000.5\r\n$6\r\nvolume\r\n$1\r\n3\r\n";
    let started = Instant::now();
    let mut left = n;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let k = left.min(BATCH);
        let mut out = Vec::with_capacity(cmd.len() * k);
        for _ in 0..k {
            out.extend_from_slice(cmd);
        }
        sock.write_all(&out).unwrap_or_else(|e| panic!("{e}"));
        let mut lines = 0usize;
        while lines < 2 * k {
            let got = sock.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
            assert!(got > 0, "server closed the connection during the load");
            lines += buf[..got].iter().filter(|&&b| b == b'\n').count();
        }
        left -= k;
    }
    started.elapsed()
}

#[test]
#[ignore = "measurement: cargo test --release --test restart_time -- --ignored --nocapture"]
fn measure_restart_time() {
    let n = entries();
    println!("| server | entries | restart after | load | stop | on disk | spawn to first PONG | recovery |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    ferrite_case(n, "SHUTDOWN (checkpoint)", &[], true);
    ferrite_case(
        n,
        "SIGKILL, checkpoints off (full replay)",
        &["--auto-checkpoint-min-size", "1000gb"],
        false,
    );
    ferrite_case(n, "SIGKILL, default 64mb checkpoints", &[], false);
    redis_case(n, "SIGKILL, AOF replay (no rewrite)", false);
    redis_case(n, "BGREWRITEAOF + SHUTDOWN (RDB preamble)", true);
}

/// VmRSS of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Reads the whole stream with `XRANGE bench (last + COUNT 1000`; returns
/// the entries seen and the time taken.
fn scan(addr: SocketAddr) -> (usize, Duration) {
    let mut c = common::conn::RespConn::connect(addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let mut start = "-".to_string();
    let mut seen = 0usize;
    loop {
        let r = call_str(&mut c, &["XRANGE", "bench", &start, "+", "COUNT", "1000"]);
        let items = match &r {
            common::resp::Node::Agg { kind: b'*', items } => items.clone(),
            other => panic!("XRANGE: {}", other.render()),
        };
        let Some(common::resp::Node::Agg { items: last, .. }) = items.last() else {
            break;
        };
        let id = last[0]
            .text()
            .map(|t| String::from_utf8_lossy(t).into_owned());
        seen += items.len();
        match id {
            Some(id) => start = format!("({id}"),
            None => break,
        }
    }
    (seen, started.elapsed())
}

fn info_num(addr: SocketAddr, section: &str, field: &str) -> u64 {
    let mut c = common::conn::RespConn::connect(addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    common::state::info_field(&mut c, section, field)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Streams larger than RAM: resident memory of one N-entry stream whose
/// full blocks are stored (docs/storage.md, "Measured"). Ignored by default;
/// asserts only that every entry is read back.
///
/// ```sh
/// FERRITE_MEASURE_ENTRIES=10000000 cargo test --release --test restart_time measure_sealed -- --ignored --nocapture
/// ```
#[test]
#[ignore = "measurement: cargo test --release --test restart_time measure_sealed -- --ignored --nocapture"]
fn measure_sealed_memory() {
    let n = entries();
    let cache = std::env::var("FERRITE_MEASURE_CACHE").unwrap_or_else(|_| "16mb".into());
    println!(
        "| server | entries | state | RSS | RSS/entry | disk | full scan (XRANGE COUNT 1000) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    // Ferrite: load, let the checkpoints store the blocks, scan, restart, scan.
    let dir = TempDir::new("measure-sealed").unwrap_or_else(|e| panic!("{e}"));
    let args = [
        "--appendfsync",
        "everysec",
        "--block-cache-size",
        cache.as_str(),
    ];
    let port = free_port();
    let (mut child, _) = time_to_pong(
        ferrite_cmd(dir.path(), port, &args),
        port,
        &dir.path().join("load.log"),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    load_addr(addr, n);
    let pid = child.0.id();
    let per = |b: u64| format!("{:.1} B", b as f64 / n as f64);
    let line = |state: &str, rss: u64, disk: u64, scan: Option<Duration>| {
        println!(
            "| ferrite (block-cache-size {cache}) | {n} | {state} | {} | {} | {} | {} |",
            mb(rss),
            per(rss),
            mb(disk),
            scan.map_or("".into(), secs)
        )
    };
    let disk = || dir_bytes(&dir.path().join("log")) + dir_bytes(&dir.path().join("streams"));
    line("after the load", rss(pid), disk(), None);
    let (seen, t) = scan(addr);
    assert_eq!(seen, n);
    line("after a full scan", rss(pid), disk(), Some(t));
    println!(
        "<!-- ferrite INFO: stream_blocks={} resident={} loads={} evicted_bytes={} -->",
        info_num(addr, "persistence", "stream_blocks"),
        info_num(addr, "persistence", "stream_blocks_resident"),
        info_num(addr, "persistence", "block_cache_loads"),
        info_num(addr, "persistence", "block_cache_evicted_bytes"),
    );
    shutdown(port, &mut child);
    let port = free_port();
    let (mut child, t0) = time_to_pong(
        ferrite_cmd(dir.path(), port, &args),
        port,
        &dir.path().join("restart.log"),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(xlen(port) as usize, n);
    let pid = child.0.id();
    line(&format!("restarted ({})", secs(t0)), rss(pid), disk(), None);
    let (seen, t) = scan(addr);
    assert_eq!(seen, n);
    line("restarted, after a full scan", rss(pid), disk(), Some(t));
    kill(&mut child);

    // Redis 7.0 with the same data.
    let rdir = TempDir::new("measure-sealed-redis").unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let (mut child, _) = time_to_pong(
        redis_cmd(rdir.path(), port, &["--appendonly", "no"]),
        port,
        &rdir.path().join("load.log"),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    load_addr(addr, n);
    let pid = child.0.id();
    let used = info_num(addr, "memory", "used_memory");
    let (seen, t) = scan(addr);
    assert_eq!(seen, n);
    println!(
        "| redis 7.0 | {n} | after the load (used_memory {}) | {} | {} | | {} |",
        mb(used),
        mb(rss(pid)),
        per(rss(pid)),
        secs(t)
    );
    kill(&mut child);
}
