//! MONITOR against redis-server 7.0 and Ferrite: the same commands give the
//! same lines (time and client port masked); admin commands are not shown;
//! RESET ends it; a monitor's disconnect is cleaned up.
mod common;

use std::time::Duration;

use common::conn::Reply;
use common::server::{Kind, Server};
use common::state::{argv, call_str};

const WAIT: Duration = Duration::from_secs(10);

/// `+1796455896.123456 [0 127.0.0.1:58890] "SET" "k" "v"` ->
/// `[0 127.0.0.1] "SET" "k" "v"`.
fn normalize(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line).into_owned();
    let rest = s.split_once(' ').map_or("", |x| x.1);
    let (client, args) = rest.split_once("] ").unwrap_or((rest, ""));
    let client = client.rsplit_once(':').map_or(client, |x| x.0);
    format!("{client}] {args}")
}

fn lines(kind: Kind) -> Vec<String> {
    let s = Server::start(kind, "monitor").unwrap_or_else(|e| panic!("{e}"));
    let mut m = s.connect().unwrap_or_else(|e| panic!("{e}"));
    let mut c = s.connect().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(call_str(&mut m, &["MONITOR"]).text(), Some(&b"OK"[..]));
    let cmds: &[&[&str]] = &[
        &["SET", "k", "a b\"c\n\x01"],
        &["CONFIG", "GET", "maxclients"],
        &["SELECT", "2"],
        &["HSET", "h", "f", "v"],
        &["GET", "nokey"],
        &["MULTI"],
        &["INCR", "n"],
        &["EXEC"],
    ];
    for cmd in cmds {
        call_str(&mut c, cmd);
    }
    // The last command's line is the last one expected: read until it.
    let mut out = Vec::new();
    while out.len() < 8 {
        match m.read_reply(WAIT) {
            Reply::Frame { node, .. } => {
                let raw = node.text().map(|t| t.to_vec()).unwrap_or_default();
                let n = normalize(&raw);
                let done = n.contains("\"EXEC\"");
                out.push(n);
                if done {
                    break;
                }
            }
            other => panic!("{kind:?}: monitor read: {}", other.render()),
        }
    }
    // RESET ends monitoring; nothing more arrives after it.
    assert_eq!(call_str(&mut m, &["RESET"]).text(), Some(&b"RESET"[..]));
    call_str(&mut c, &["SET", "after", "1"]);
    assert!(
        !m.has_data_within(Duration::from_millis(100)),
        "{kind:?}: line after RESET"
    );
    m.send_command(&argv(&["PING"]))
        .unwrap_or_else(|e| panic!("{e}"));
    out
}

#[test]
#[cfg_attr(skip_diff, ignore = "FERRITE_SKIP_DIFF=1: needs redis-server 7.0")]
fn monitor_lines_match_redis() {
    let want = lines(Kind::Redis);
    let got = lines(Kind::Ferrite);
    assert_eq!(got, want);
    assert!(
        want.iter()
            .any(|l| l.contains("\"SET\" \"k\" \"a b\\\"c\\n\\x01\"")),
        "{want:?}"
    );
    assert!(!want.iter().any(|l| l.contains("CONFIG")), "{want:?}");
}
