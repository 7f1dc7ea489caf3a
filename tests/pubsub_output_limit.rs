//! A pub/sub subscriber that stops reading is disconnected by
//! `client-output-buffer-limit pubsub` (hard limit; soft limit held for
//! some seconds), while PUBLISH keeps answering promptly and the server's
//! memory stays bounded. Runs against redis-server too (`FERRITE_DIFF_SELF=1`).
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::conn::RespConn;
use common::resp::encode_command;
use common::server::{start_ferrite, Server};

const TIMEOUT: Duration = Duration::from_secs(10);
/// One PUBLISH may take this long at most, even on a loaded machine: the
/// publisher never waits for the subscriber's socket.
const PUBLISH_BOUND: Duration = Duration::from_secs(3);
const PAYLOAD: usize = 64 * 1024;

fn cmd(words: &[&[u8]]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.to_vec()).collect()
}

/// Send one command, read one reply (bounded), return its raw bytes.
fn call(c: &mut RespConn, words: &[&[u8]], bound: Duration) -> Vec<u8> {
    c.send_command(&cmd(words))
        .unwrap_or_else(|e| panic!("send: {e}"));
    let start = Instant::now();
    let r = c.read_reply(bound);
    assert!(
        r.node().is_some(),
        "no reply within {bound:?}: {}",
        r.render()
    );
    assert!(start.elapsed() <= bound);
    r.raw().to_vec()
}

/// A subscriber on `channel` that reads its confirmation and then never
/// reads again.
fn lazy_subscriber(s: &Server, channel: &[u8]) -> TcpStream {
    let mut sock = TcpStream::connect(s.addr()).unwrap_or_else(|e| panic!("connect: {e}"));
    sock.set_read_timeout(Some(TIMEOUT))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    sock.write_all(&encode_command(&cmd(&[b"SUBSCRIBE", channel])))
        .unwrap_or_else(|e| panic!("write: {e}"));
    let want = format!(
        "*3\r\n$9\r\nsubscribe\r\n${}\r\n{}\r\n:1\r\n",
        channel.len(),
        String::from_utf8_lossy(channel)
    );
    let mut got = vec![0u8; want.len()];
    sock.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("subscribe reply: {e}"));
    assert_eq!(got, want.as_bytes());
    sock
}

/// Resident memory of `pid` in KiB (Linux), if readable.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Publish `PAYLOAD`-byte messages on `channel` until a PUBLISH reaches
/// nobody (the subscriber was closed) or `max` messages were sent. Returns
/// how many were sent, the highest RSS seen, and when the first message was
/// sent.
fn publish_until_dropped(
    s: &Server,
    pubc: &mut RespConn,
    channel: &[u8],
    max: usize,
) -> (usize, u64) {
    let payload = vec![b'x'; PAYLOAD];
    let mut peak = 0;
    for i in 1..=max {
        let r = call(pubc, &[b"PUBLISH", channel, &payload], PUBLISH_BOUND);
        if i % 64 == 0 {
            peak = peak.max(rss_kib(s.pid()).unwrap_or(0));
        }
        match &r[..] {
            b":1\r\n" => {}
            b":0\r\n" => return (i, peak),
            other => panic!("PUBLISH replied {:?}", String::from_utf8_lossy(other)),
        }
    }
    panic!(
        "the subscriber was not disconnected after {max} messages of {PAYLOAD} bytes\n{}",
        s.log_tail(20)
    );
}

/// The closed subscriber's socket ends (after what the kernel had buffered).
fn assert_closed(mut sock: TcpStream) {
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        assert!(Instant::now() < deadline, "subscriber socket still open");
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[test]
#[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
fn hard_limit_disconnects_a_subscriber_that_never_reads() {
    let s = start_ferrite().unwrap_or_else(|e| panic!("{e}"));
    let mut pubc = s.connect().unwrap_or_else(|e| panic!("{e}"));
    // Redis's default: pubsub 32mb 8mb 60.
    let limit = call(
        &mut pubc,
        &[b"CONFIG", b"GET", b"client-output-buffer-limit"],
        TIMEOUT,
    );
    assert!(String::from_utf8_lossy(&limit).contains("pubsub 33554432 8388608 60"));
    let before = rss_kib(s.pid()).unwrap_or(0);
    let sub = lazy_subscriber(&s, b"firehose");
    // 32 MiB in the server, plus what the kernel buffers on both sides of
    // the loopback connection (a few MiB each): well under 4096 messages.
    let (sent, peak) = publish_until_dropped(&s, &mut pubc, b"firehose", 4096);
    let published = sent * PAYLOAD;
    assert!(
        published >= 32 << 20,
        "disconnected after only {published} bytes (before the 32mb hard limit)"
    );
    // The server held at most about the limit for the subscriber (plus
    // allocator slack), not everything that was published.
    if before > 0 && peak > 0 {
        let grown = peak.saturating_sub(before);
        assert!(
            grown < 96 * 1024,
            "RSS grew by {grown} KiB while {} KiB were published",
            published / 1024
        );
    }
    assert_closed(sub);
    // The channel is empty now, and the server answers as usual.
    let r = call(&mut pubc, &[b"PUBSUB", b"NUMSUB", b"firehose"], TIMEOUT);
    assert_eq!(r, b"*2\r\n$8\r\nfirehose\r\n:0\r\n");
    assert_eq!(call(&mut pubc, &[b"PING"], TIMEOUT), b"+PONG\r\n");
}

#[test]
#[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
fn soft_limit_disconnects_after_its_seconds() {
    let s = start_ferrite().unwrap_or_else(|e| panic!("{e}"));
    let mut pubc = s.connect().unwrap_or_else(|e| panic!("{e}"));
    let ok = call(
        &mut pubc,
        &[
            b"CONFIG",
            b"SET",
            b"client-output-buffer-limit",
            b"pubsub 0 256kb 1",
        ],
        TIMEOUT,
    );
    assert_eq!(ok, b"+OK\r\n");
    let sub = lazy_subscriber(&s, b"slow");
    let start = Instant::now();
    // Publish at a bounded pace (pacing, not synchronisation): the soft
    // limit acts only after a second over it, and the server must not hold
    // a second of unbounded publishing meanwhile.
    let payload = vec![b'y'; PAYLOAD];
    let mut dropped = false;
    while start.elapsed() < Duration::from_secs(30) {
        let r = call(&mut pubc, &[b"PUBLISH", b"slow", &payload], PUBLISH_BOUND);
        if r == b":0\r\n" {
            dropped = true;
            break;
        }
        assert_eq!(r, b":1\r\n");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(dropped, "not disconnected by the soft limit within 30 s");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "disconnected before the soft limit's seconds"
    );
    assert_closed(sub);
}
