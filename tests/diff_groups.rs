//! Differential tests for consumer groups.
//!
//! - `tests/diff/groups/*.txt`: ordinary differential scripts (see
//!   docs/testing.md), one `#[test]` each.
//! - `tests/diff/groups/timed/*.txt`: scripts whose replies carry delivery
//!   times (XPENDING's idle, XINFO STREAM FULL's delivery and seen times):
//!   played by [`run_timed`], which compares every reply byte for byte
//!   except those times, compared within [`TOL_MS`]. These scripts hold
//!   only commands, comments and `@conn` prefixes / switches.
mod common;

use common::conn::{Reply, RespConn};
use common::resp::Node;
use common::script::split_args;
use common::server::{redis_server_path, skip_diff, Pair};
use std::collections::HashMap;
use std::time::Duration;

diff_tests! {
    xgroup => "groups/xgroup.txt",
    xreadgroup => "groups/xreadgroup.txt",
    xreadgroup_block => "groups/xreadgroup_block.txt",
    xreadgroup_unblock => "groups/xreadgroup_unblock.txt",
}

/// Tolerance for times: the two servers run the same command a few
/// milliseconds apart, and a loaded CI machine may stretch that.
const TOL_MS: i64 = 1000;

fn is_id(n: &Node) -> bool {
    n.text().is_some_and(|t| {
        let mut parts = t.splitn(2, |&c| c == b'-');
        let (a, b) = (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
        !a.is_empty() && !b.is_empty() && a.iter().chain(b).all(u8::is_ascii_digit)
    })
}

fn is_bulk(n: &Node) -> bool {
    matches!(n, Node::Blob { kind: b'$', .. })
}

fn approx(n: &mut Node) {
    if let Some(value) = n.as_int() {
        *n = Node::Approx { value, tol: TOL_MS };
    }
}

/// Replaces delivery times and idle times by tolerance placeholders:
/// `[id, consumer, time, count]` (XPENDING, FULL's group PEL), `[id, time,
/// count]` (FULL's consumer PEL), and the values of `idle` / `seen-time`;
/// masks `radix-tree-nodes` (rax internals).
fn mask_times(n: &mut Node) {
    let Node::Agg { kind, items } = n else {
        return;
    };
    let k = *kind;
    if items.len() == 4
        && is_id(&items[0])
        && is_bulk(&items[1])
        && items[2].as_int().is_some()
        && items[3].as_int().is_some()
    {
        approx(&mut items[2]);
        return;
    }
    if items.len() == 3
        && is_id(&items[0])
        && items[1].as_int().is_some()
        && items[2].as_int().is_some()
    {
        approx(&mut items[1]);
        return;
    }
    if (k == b'%' || k == b'*') && items.len() % 2 == 0 {
        for i in (0..items.len()).step_by(2) {
            match items[i].text() {
                Some(b"idle" | b"seen-time") => approx(&mut items[i + 1]),
                // rax internals (see streams/xinfo.txt)
                Some(b"radix-tree-nodes") => items[i + 1] = Node::Masked("radix-tree-nodes".into()),
                _ => {}
            }
        }
    }
    for i in items.iter_mut() {
        mask_times(i);
    }
}

struct Side {
    pair_server: &'static str,
    conns: HashMap<String, RespConn>,
}

/// Plays a timed script (see the module docs) on redis-server and Ferrite.
fn run_timed(name: &str) {
    if skip_diff() {
        eprintln!("FERRITE_SKIP_DIFF=1: skipping timed script {name}");
        return;
    }
    if let Err(e) = redis_server_path() {
        panic!("{e}");
    }
    let path = common::runner::scripts_dir().join(name);
    let src = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read script {}: {e}", path.display()));
    let pair = Pair::start().unwrap_or_else(|e| panic!("{name}: {e}"));
    let timeout = common::runner::read_timeout();
    let trace = std::env::var("FERRITE_DIFF_TRACE").is_ok_and(|v| v == "1");
    let mut sides = [
        Side {
            pair_server: "redis",
            conns: HashMap::new(),
        },
        Side {
            pair_server: "ferrite",
            conns: HashMap::new(),
        },
    ];
    let mut current = "main".to_string();
    for (lineno, line) in src.lines().enumerate() {
        let lineno = lineno + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut words = split_args(t).unwrap_or_else(|e| panic!("{name}:{lineno}: {e}"));
        // `!repeat N CMD...`: N commands, `${i}` = 1..=N; nothing else.
        let mut repeat = None;
        if words.first().is_some_and(|w| w.starts_with(b"!")) {
            let n = (words[0] == b"!repeat")
                .then(|| words.get(1))
                .flatten()
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<usize>().ok());
            let Some(n) = n.filter(|_| words.len() > 2) else {
                panic!("{name}:{lineno}: timed scripts only know `!repeat N CMD...`");
            };
            repeat = Some(n);
            words.drain(..2);
        }
        let mut conn = current.clone();
        if let Some(first) = words.first() {
            if let Some(c) = first.strip_prefix(b"@") {
                let c = String::from_utf8_lossy(c).into_owned();
                words.remove(0);
                if words.is_empty() {
                    current = c;
                    continue;
                }
                conn = c;
            }
        }
        let runs: Vec<Vec<Vec<u8>>> = match repeat {
            None => vec![words],
            Some(n) => (1..=n)
                .map(|i| {
                    words
                        .iter()
                        .map(|w| {
                            String::from_utf8_lossy(w)
                                .replace("${i}", &i.to_string())
                                .into_bytes()
                        })
                        .collect()
                })
                .collect(),
        };
        for words in runs {
            run_timed_command(
                name, lineno, t, &conn, &words, &pair, &mut sides, timeout, trace,
            );
        }
    }
    // Both servers must still be alive.
    for server in [&pair.redis, &pair.ferrite] {
        let mut c = server.connect().unwrap_or_else(|e| panic!("{name}: {e}"));
        c.send_command(&[b"PING".to_vec()])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            matches!(c.read_reply(Duration::from_secs(10)), Reply::Frame { .. }),
            "{name}: a server stopped answering"
        );
    }
}

/// Sends one command to both servers on connection `conn` and compares the
/// replies after [`mask_times`].
#[allow(clippy::too_many_arguments)]
fn run_timed_command(
    name: &str,
    lineno: usize,
    t: &str,
    conn: &str,
    words: &[Vec<u8>],
    pair: &Pair,
    sides: &mut [Side; 2],
    timeout: Duration,
    trace: bool,
) {
    {
        let mut replies: Vec<Reply> = Vec::new();
        for side in sides.iter_mut() {
            let server = if side.pair_server == "redis" {
                &pair.redis
            } else {
                &pair.ferrite
            };
            if !side.conns.contains_key(conn) {
                let c = server
                    .connect()
                    .unwrap_or_else(|e| panic!("{name}:{lineno}: connect: {e}"));
                side.conns.insert(conn.to_string(), c);
            }
            let Some(c) = side.conns.get_mut(conn) else {
                panic!("{name}:{lineno}: connection vanished");
            };
            c.send_command(words)
                .unwrap_or_else(|e| panic!("{name}:{lineno}: send: {e}"));
            let r = c.read_reply(timeout);
            if words[0].eq_ignore_ascii_case(b"HELLO") {
                match r.raw().first() {
                    Some(b'%') => c.resp3 = true,
                    Some(b'*') => c.resp3 = false,
                    _ => {}
                }
            }
            replies.push(r);
        }
        let shown: Vec<Option<Node>> = replies
            .iter()
            .map(|r| {
                r.node().cloned().map(|mut n| {
                    mask_times(&mut n);
                    n
                })
            })
            .collect();
        if trace {
            eprintln!(
                "[{name}:{lineno} @{conn}] {t}\n  -> {}",
                replies[0].render()
            );
        }
        let same = match (&shown[0], &shown[1]) {
            (Some(a), Some(b)) => a.same(b),
            _ => false,
        };
        if !same {
            panic!(
                "{name} line {lineno} (@{conn}): {t}\nredis replied:\n{}ferrite replied:\n{}redis raw: {:?}\nferrite raw: {:?}\n--- ferrite log ---\n{}",
                replies[0].render(),
                replies[1].render(),
                String::from_utf8_lossy(replies[0].raw()),
                String::from_utf8_lossy(replies[1].raw()),
                pair.ferrite.log_tail(15)
            );
        }
    }
}

macro_rules! timed_tests {
    ($($name:ident => $file:expr),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_timed($file);
            }
        )*
    };
}

timed_tests! {
    xpending => "groups/timed/xpending.txt",
    xclaim => "groups/timed/xclaim.txt",
    xautoclaim => "groups/timed/xautoclaim.txt",
    xinfo_full => "groups/timed/xinfo_full.txt",
}
