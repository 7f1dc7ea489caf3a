//! CLIENT PAUSE / UNPAUSE against redis-server 7.0 and Ferrite: under WRITE
//! reads go on and writes wait; under ALL everything waits; UNPAUSE or the
//! timeout releases them, in order. Absence is checked with a short bounded
//! wait (never used as synchronisation); every wait for a reply is bounded.
mod common;

use std::time::{Duration, Instant};

use common::conn::RespConn;
use common::server::{Kind, Server};
use common::state::{argv, call_str};

const WAIT: Duration = Duration::from_secs(10);

fn text(c: &mut RespConn) -> String {
    match c.read_reply(WAIT) {
        common::conn::Reply::Frame { node, .. } => node.render(),
        other => panic!("no reply: {}", other.render()),
    }
}

fn run(kind: Kind) -> Vec<String> {
    let s = Server::start(kind, "pause").unwrap_or_else(|e| panic!("{e}"));
    let mut a = s.connect().unwrap_or_else(|e| panic!("{e}"));
    let mut b = s.connect().unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for cmd in [
        &["CLIENT", "PAUSE", "x"][..],
        &["CLIENT", "PAUSE", "-1"],
        &["CLIENT", "PAUSE", "10", "FOO"],
        &["CLIENT", "PAUSE"],
        &["CLIENT", "UNPAUSE", "x"],
    ] {
        out.push(call_str(&mut a, cmd).render());
    }
    // WRITE: a read answers, a write waits until UNPAUSE.
    out.push(call_str(&mut a, &["CLIENT", "PAUSE", "100000", "WRITE"]).render());
    out.push(call_str(&mut b, &["GET", "k"]).render());
    b.send_command(&argv(&["SET", "k", "v"]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !b.has_data_within(Duration::from_millis(150)),
        "{kind:?}: a write ran during PAUSE WRITE"
    );
    out.push(call_str(&mut a, &["GET", "k"]).render());
    out.push(call_str(&mut a, &["CLIENT", "UNPAUSE"]).render());
    out.push(text(&mut b));
    out.push(call_str(&mut b, &["GET", "k"]).render());
    // ALL with a timeout: even PING waits, and is answered after it.
    out.push(call_str(&mut a, &["CLIENT", "PAUSE", "300", "ALL"]).render());
    let t = Instant::now();
    b.send_command(&argv(&["PING"]))
        .unwrap_or_else(|e| panic!("{e}"));
    out.push(text(&mut b));
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{kind:?}: PING ran during PAUSE ALL"
    );
    out
}

#[test]
#[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
fn client_pause_holds_commands_like_redis() {
    let want = run(Kind::Redis);
    let got = run(Kind::Ferrite);
    assert_eq!(got, want);
}
