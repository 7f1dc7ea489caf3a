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
    watch_multi => "groups/watch_multi.txt",
    xack => "groups/xack.txt",
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

// ---- INFO commandstats / errorstats -------------------------------------------

/// One connection per server, used in lock step.
struct Both {
    pair: Pair,
    conns: HashMap<String, [RespConn; 2]>,
    timeout: Duration,
}

impl Both {
    fn start() -> Both {
        Both {
            pair: Pair::start().unwrap_or_else(|e| panic!("{e}")),
            conns: HashMap::new(),
            timeout: common::runner::read_timeout(),
        }
    }

    fn conn(&mut self, name: &str) -> &mut [RespConn; 2] {
        if !self.conns.contains_key(name) {
            let a = self.pair.redis.connect().unwrap_or_else(|e| panic!("{e}"));
            let b = self
                .pair
                .ferrite
                .connect()
                .unwrap_or_else(|e| panic!("{e}"));
            self.conns.insert(name.to_string(), [a, b]);
        }
        self.conns
            .get_mut(name)
            .unwrap_or_else(|| panic!("connection {name} vanished"))
    }

    fn send(&mut self, conn: &str, cmd: &str) {
        let words = split_args(cmd).unwrap_or_else(|e| panic!("{cmd}: {e}"));
        for c in self.conn(conn).iter_mut() {
            c.send_command(&words)
                .unwrap_or_else(|e| panic!("{cmd}: {e}"));
        }
    }

    /// Reads one reply on each side; both must be frames.
    fn read(&mut self, conn: &str) -> [Node; 2] {
        let t = self.timeout;
        let [a, b] = self.conn(conn);
        let (ra, rb) = (a.read_reply(t), b.read_reply(t));
        match (ra, rb) {
            (Reply::Frame { node: x, .. }, Reply::Frame { node: y, .. }) => [x, y],
            (x, y) => panic!(
                "no reply on @{conn}:\nredis: {}ferrite: {}",
                x.render(),
                y.render()
            ),
        }
    }

    /// Runs `cmd` on both and checks the replies are identical.
    fn same(&mut self, conn: &str, cmd: &str) -> Node {
        self.send(conn, cmd);
        let [a, b] = self.read(conn);
        assert!(
            a.same(&b),
            "{cmd}:\nredis:\n{}ferrite:\n{}",
            a.render(),
            b.render()
        );
        a
    }

    /// Waits (bounded) until both servers report `n` blocked clients.
    fn wait_blocked(&mut self, n: usize) {
        let deadline = std::time::Instant::now() + self.timeout;
        for side in 0..2 {
            loop {
                let [a, b] = self.conn("admin");
                let c = if side == 0 { a } else { b };
                c.send_command(&[b"INFO".to_vec(), b"clients".to_vec()])
                    .unwrap_or_else(|e| panic!("{e}"));
                let r = c.read_reply(Duration::from_secs(10));
                let text = r
                    .node()
                    .and_then(|n| n.text())
                    .map(|t| String::from_utf8_lossy(t).into_owned())
                    .unwrap_or_default();
                let got = text
                    .lines()
                    .find_map(|l| l.strip_prefix("blocked_clients:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if got == Some(n) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "side {side}: blocked_clients never reached {n} (last {got:?})"
                );
                std::thread::yield_now();
            }
        }
    }

    /// `INFO <section>` on each side, as text.
    fn info(&mut self, section: &str) -> [String; 2] {
        self.send("admin", &format!("INFO {section}"));
        let [a, b] = self.read("admin");
        let t = |n: &Node| String::from_utf8_lossy(n.text().unwrap_or_default()).into_owned();
        [t(&a), t(&b)]
    }
}

/// `cmdstat_<name>:calls=..,usec=..,usec_per_call=..,rejected_calls=..,
/// failed_calls=..` without the times, sorted.
fn command_counts(info: &str) -> Vec<String> {
    let mut out: Vec<String> = info
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .map(|l| {
            let (name, fields) = l.split_once(':').unwrap_or((l, ""));
            let kept: Vec<&str> = fields
                .trim()
                .split(',')
                .filter(|f| !f.starts_with("usec"))
                .collect();
            format!("{name}:{}", kept.join(","))
        })
        .collect();
    out.sort();
    out
}

fn field_lines(info: &str, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = info
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.trim().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn info_stats_count_group_commands_and_errors() {
    if skip_diff() {
        return;
    }
    if let Err(e) = redis_server_path() {
        panic!("{e}");
    }
    let mut b = Both::start();
    b.same("main", "CONFIG RESETSTAT");
    for cmd in [
        "XADD s 1-1 a 1",
        "XGROUP CREATE s g 0",
        "XGROUP CREATE s g 0",
        "XGROUP CREATE s",
        "XGROUP FOO",
        "XGROUP CREATE nokey g 0",
        "XGROUP SETID s nogroup 0",
        "XGROUP CREATECONSUMER s g c",
        "XGROUP DELCONSUMER s g c",
        "XREADGROUP GROUP g c STREAMS s >",
        "XREADGROUP GROUP nogroup c STREAMS s >",
        "XREADGROUP GROUP g c STREAMS s $",
        "XACK s g 1-1",
        "XACK s g abc",
        "XPENDING s g",
        "XPENDING s nogroup",
        "XPENDING s g - + x",
        "XCLAIM s g c 0 1-1",
        "XCLAIM s nogroup c 0 1-1",
        "XCLAIM s g c 0 1-1 FOO",
        "XAUTOCLAIM s g c 0 0",
        "XAUTOCLAIM s nogroup c 0 0",
        "XAUTOCLAIM s g c 0 0 COUNT 0",
        "XINFO GROUPS s",
        "XINFO GROUPS nokey",
        "XINFO CONSUMERS s nogroup",
        "XINFO STREAM s FULL",
        "SET str v",
        "XREADGROUP GROUP g c STREAMS str >",
        "MULTI",
        "XREADGROUP GROUP g c BLOCK 0 STREAMS s >",
        "XGROUP CREATE s g 0",
        "EXEC",
    ] {
        b.same("main", cmd);
    }
    // Blocked calls: served, timed out, ended by each error.
    b.send("r1", "XREADGROUP GROUP g c BLOCK 0 STREAMS s >");
    b.wait_blocked(1);
    b.same("main", "XADD s 2-1 b 2");
    let [x, y] = b.read("r1");
    assert!(x.same(&y));
    b.same("r1", "XREADGROUP GROUP g c BLOCK 10 STREAMS s >");
    b.send("r1", "XREADGROUP GROUP g c BLOCK 0 STREAMS s >");
    b.send("r2", "XREADGROUP GROUP g c2 BLOCK 0 STREAMS s >");
    b.wait_blocked(2);
    b.same("main", "XGROUP DESTROY s g");
    for c in ["r1", "r2"] {
        let [x, y] = b.read(c);
        assert!(x.same(&y), "{}{}", x.render(), y.render());
    }
    b.same("main", "XGROUP CREATE s g $");
    b.send("r1", "XREADGROUP GROUP g c BLOCK 0 STREAMS s >");
    b.wait_blocked(1);
    b.same("main", "DEL s");
    let [x, y] = b.read("r1");
    assert!(x.same(&y), "{}{}", x.render(), y.render());

    let [ra, fa] = b.info("commandstats");
    let (rc, fc) = (command_counts(&ra), command_counts(&fa));
    let relevant = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter(|l| l.starts_with('x') || l.starts_with("exec") || l.starts_with("multi"))
            .cloned()
            .collect()
    };
    eprintln!("commandstats: {:#?}", relevant(&rc));
    assert_eq!(relevant(&fc), relevant(&rc), "commandstats differ");
    let [ra, fa] = b.info("errorstats");
    assert_eq!(
        field_lines(&fa, "errorstat_"),
        field_lines(&ra, "errorstat_"),
        "errorstats differ"
    );
    assert!(
        field_lines(&ra, "errorstat_NOGROUP:").len() == 1,
        "the script must produce NOGROUP errors"
    );
    let [ra, fa] = b.info("stats");
    assert_eq!(
        field_lines(&fa, "total_error_replies:"),
        field_lines(&ra, "total_error_replies:")
    );
}
