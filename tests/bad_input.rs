//! Bad and heavy input against the real binary: a million pipelined
//! commands, clients that vanish mid-command or mid-bulk, and a huge bulk
//! header. Each must leave the server healthy and other clients unaffected.

mod common;

use common::server::{start_ferrite, Server};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn server() -> Server {
    start_ferrite().unwrap_or_else(|e| panic!("{e}"))
}

fn connect(s: &Server) -> TcpStream {
    let c = TcpStream::connect(s.addr()).unwrap_or_else(|e| panic!("connect: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap_or_else(|e| panic!("{e}"));
    c
}

/// PING on a fresh connection answers within the read timeout.
fn assert_healthy(s: &Server) {
    let mut c = connect(s);
    c.write_all(b"*1\r\n$4\r\nPING\r\n")
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut buf = [0u8; 7];
    c.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(&buf, b"+PONG\r\n");
}

#[test]
fn a_million_pipelined_commands_all_get_replies() {
    const N: usize = 1_000_000;
    let s = server();
    let mut w = connect(&s);
    let mut r = w.try_clone().unwrap_or_else(|e| panic!("{e}"));
    // Write from one thread while this one reads, as a pipelining client does.
    let writer = std::thread::spawn(move || {
        let chunk = b"*1\r\n$4\r\nPING\r\n".repeat(10_000);
        for _ in 0..N / 10_000 {
            w.write_all(&chunk).unwrap_or_else(|e| panic!("write: {e}"));
        }
        w
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let expected = N * 7;
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let mut carry = Vec::new();
    while got < expected {
        assert!(
            Instant::now() < deadline,
            "only {got} of {expected} reply bytes in 120 s"
        );
        let n = r.read(&mut buf).unwrap_or_else(|e| panic!("read: {e}"));
        assert!(n > 0, "server closed the connection after {got} bytes");
        carry.extend_from_slice(&buf[..n]);
        let whole = carry.len() / 7 * 7;
        assert!(
            carry[..whole].chunks(7).all(|c| c == b"+PONG\r\n"),
            "unexpected reply bytes"
        );
        got += whole;
        carry.drain(..whole);
    }
    let _w = writer
        .join()
        .unwrap_or_else(|_| panic!("writer thread panicked"));
    assert_healthy(&s);
}

#[test]
fn clients_vanishing_mid_command_leave_the_server_healthy() {
    let s = server();
    // Half a command, then gone.
    let mut c = connect(&s);
    c.write_all(b"*3\r\n$4\r\nXADD\r\n$1\r\ns")
        .unwrap_or_else(|e| panic!("{e}"));
    drop(c);
    // A huge (but allowed) bulk announced, a little of it sent, then gone.
    let mut c = connect(&s);
    c.write_all(b"*2\r\n$4\r\nECHO\r\n$536870912\r\nabc")
        .unwrap_or_else(|e| panic!("{e}"));
    drop(c);
    // Over the limit: Redis's error, then the connection closes.
    let mut c = connect(&s);
    c.write_all(b"*2\r\n$4\r\nECHO\r\n$536870913\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply, b"-ERR Protocol error: invalid bulk length\r\n");
    // A blocked reader that vanishes.
    let mut c = connect(&s);
    c.write_all(
        b"*6\r\n$5\r\nXREAD\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n$7\r\nSTREAMS\r\n$1\r\ns\r\n$1\r\n$\r\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    drop(c);
    for _ in 0..3 {
        assert_healthy(&s);
    }
}
