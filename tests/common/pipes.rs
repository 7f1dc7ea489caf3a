//! Helpers for the black-box pipeline tests (`tests/pipelines*.rs`,
//! `tests/pipeline_scenarios.rs`): a server, replies that must be OK or an
//! error, PIPELINE.INFO, and bounded waits on a pipeline's progress.

use std::time::{Duration, Instant};

use super::conn::RespConn;
use super::resp::Node;
use super::server::{Launch, Server, TempDir};
use super::state::{call_str, field, text};

/// Bound on every wait for a pipeline to catch up or fail.
pub const WAIT: Duration = Duration::from_secs(60);

/// A server on `dir` (label `label`, extra arguments) and a connection.
pub fn start(label: &str, dir: &TempDir, extra: &[&str]) -> (Server, RespConn) {
    let s = Launch::ferrite(label)
        .dir(dir.path())
        .args(extra)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    let c = s
        .connect()
        .unwrap_or_else(|e| panic!("{e}\n{}", s.log_tail(20)));
    (s, c)
}

/// Sends a command that must reply OK.
pub fn ok(c: &mut RespConn, parts: &[&str]) {
    let r = call_str(c, parts);
    assert!(
        r.text() == Some(b"OK"),
        "{parts:?} -> {} (want OK)",
        r.render()
    );
}

/// Sends a command that must reply an error; its text.
pub fn err(c: &mut RespConn, parts: &[&str]) -> String {
    let r = call_str(c, parts);
    assert!(r.is_error(), "{parts:?} -> {} (want an error)", r.render());
    String::from_utf8_lossy(r.text().unwrap_or_default()).into_owned()
}

/// PIPELINE.INFO name (must not be an error).
pub fn info(c: &mut RespConn, name: &str) -> Node {
    let r = call_str(c, &["PIPELINE.INFO", name]);
    assert!(!r.is_error(), "PIPELINE.INFO {name}: {}", r.render());
    r
}

/// Polls PIPELINE.INFO (bounded) until the pipeline has read everything
/// its source holds: its sink then holds every result (they commit with
/// the position).
pub fn caught_up(c: &mut RespConn, name: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let i = info(c, name);
        let state = text(field(&i, "state"));
        assert!(state != "failed", "{name} failed: {}", i.render());
        if state == "running" && field(&i, "lag_entries").as_int() == Some(0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not caught up: {}",
            i.render()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Polls PIPELINE.INFO (bounded) until the pipeline failed; its error.
pub fn failed_with(c: &mut RespConn, name: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let i = info(c, name);
        if text(field(&i, "state")) == "failed" {
            return text(field(&i, "error"));
        }
        assert!(
            Instant::now() < deadline,
            "{name} never failed: {}",
            i.render()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
