//! What one client can make the server hold is bounded: parsed arguments
//! of a half-read command count against `client-query-buffer-limit` (the
//! connection is closed past it, as in Redis), and a bulk header alone
//! reserves a small chunk, not the length it announces. Other clients are
//! served throughout.

mod common;

use common::server::{Launch, Server};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn connect(s: &Server) -> TcpStream {
    let c = TcpStream::connect(s.addr()).unwrap_or_else(|e| panic!("connect: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("{e}"));
    c.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("{e}"));
    c
}

fn assert_healthy(s: &Server) {
    let mut c = connect(s);
    c.write_all(b"*1\r\n$4\r\nPING\r\n")
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut buf = [0u8; 7];
    c.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(&buf, b"+PONG\r\n");
}

/// `VmRSS` and `VmSize` of the process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmSize:"))
}

#[test]
fn a_flood_of_small_arguments_is_cut_at_the_query_buffer_limit() {
    let s = Launch::ferrite("flood")
        .args(&["--client-query-buffer-limit", "1mb"])
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let (rss0, _) = memory(s.pid());
    let mut c = connect(&s);
    c.write_all(b"*2000000000\r\n")
        .unwrap_or_else(|e| panic!("write: {e}"));
    // 64 MiB of one-byte arguments: 9.6 million of them, which without a
    // bound would hold several hundred MB of parsed arguments.
    let chunk = b"$1\r\nx\r\n".repeat(64 * 1024 / 7);
    let mut sent = 0usize;
    let mut closed = false;
    while sent < 64 << 20 {
        match c.write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    if !closed {
        // Everything was written into socket buffers: the server must
        // still close the connection (EOF, or a reset) without a reply.
        let mut buf = [0u8; 64];
        closed = match c.read(&mut buf) {
            Ok(0) | Err(_) => true,
            Ok(n) => panic!("unexpected reply {:?}", &buf[..n]),
        };
    }
    assert!(closed, "the connection was not closed");
    assert!(
        sent < 32 << 20,
        "the server read {sent} bytes of arguments before closing"
    );
    let (rss, _) = memory(s.pid());
    assert!(
        rss < rss0 + (64 << 20),
        "RSS grew from {rss0} to {rss} bytes"
    );
    assert!(
        s.log_text()
            .contains("closing client that reached max query buffer length"),
        "{}",
        s.log_tail(10)
    );
    assert_healthy(&s);
}

#[test]
fn bulk_headers_alone_do_not_reserve_what_they_announce() {
    let s = Launch::ferrite("bulk-headers")
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let (rss0, vm0) = memory(s.pid());
    let mut idle = Vec::new();
    for _ in 0..40 {
        let mut c = connect(&s);
        c.write_all(b"*2\r\n$4\r\nECHO\r\n$536870912\r\n")
            .unwrap_or_else(|e| panic!("write: {e}"));
        idle.push(c);
    }
    // Round trips on another connection let the server read all of them
    // (one worker thread serves every connection in turn).
    for _ in 0..3 {
        assert_healthy(&s);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let (mut rss, mut vm) = memory(s.pid());
    while Instant::now() < deadline {
        let m = memory(s.pid());
        rss = rss.max(m.0);
        vm = vm.max(m.1);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        vm < vm0 + (512 << 20),
        "40 headers of 512 MB took the address space from {vm0} to {vm}"
    );
    assert!(rss < rss0 + (64 << 20), "RSS grew from {rss0} to {rss}");
    // A bulk that really arrives, slowly, in pieces, is still read whole.
    let mut c = connect(&s);
    c.write_all(b"*2\r\n$4\r\nECHO\r\n$300000\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let piece = vec![b'z'; 1000];
    for _ in 0..300 {
        c.write_all(&piece).unwrap_or_else(|e| panic!("{e}"));
    }
    c.write_all(b"\r\n").unwrap_or_else(|e| panic!("{e}"));
    let mut reply = vec![0u8; 9 + 300_000 + 2];
    c.read_exact(&mut reply).unwrap_or_else(|e| panic!("{e}"));
    assert!(reply.starts_with(b"$300000\r\nzzz"));
    assert!(reply.ends_with(b"zzz\r\n"));
    drop(idle);
    assert_healthy(&s);
}
