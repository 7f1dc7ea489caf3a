//! `CONFIG SET loglevel` changes what the running server logs.
mod common;

use std::time::{Duration, Instant};

use common::server::Launch;

fn accepted_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("Accepted 127.0.0.1"))
        .count()
}

#[test]
fn config_set_loglevel_takes_effect_at_run_time() {
    let s = Launch::ferrite("loglevel")
        .args(&["--loglevel", "notice"])
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = s.connect().unwrap_or_else(|e| panic!("{e}"));
    c.send_command(&[b"PING".to_vec()])
        .unwrap_or_else(|e| panic!("{e}"));
    c.read_reply(Duration::from_secs(10));
    assert_eq!(accepted_lines(&s.log_text()), 0, "debug lines at notice");

    c.send_command(&[
        b"CONFIG".to_vec(),
        b"SET".to_vec(),
        b"loglevel".to_vec(),
        b"debug".to_vec(),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.read_reply(Duration::from_secs(10)).render(),
        "(simple) OK\n"
    );
    let mut d = s.connect().unwrap_or_else(|e| panic!("{e}"));
    d.send_command(&[b"PING".to_vec()])
        .unwrap_or_else(|e| panic!("{e}"));
    d.read_reply(Duration::from_secs(10));
    // The line is written before the connection is served; the log file
    // may lag the socket by a write, so look for a bounded time.
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted_lines(&s.log_text()) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(accepted_lines(&s.log_text()), 1, "{}", s.log_tail(10));
}
